"""The batch tier under faults: a batch that cannot be sent, a lost create and a list that cannot be read, results
that take several invocations or hold broken lines, storage trouble, budgets of jobs canceled after sending. Each
test states the rule it holds to; driven as tests/integration/test_batch_tier.py drives the stack (moto's server,
the emulator's Batch API, the functions in-process, crashes and lost answers simulated with monkeypatch)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

from darkroom import quotas, storage, tenants
from darkroom.batches import batcher, follow
from darkroom.batches.records import BatchRecord, BatchStore
from darkroom.errors import ProviderRejected
from darkroom.jobs.store import JobStore
from darkroom.providers.batches import OpenAIBatchApi
from darkroom_local.stack import LocalStack
from tests.batches import (
    batched,
    cancel,
    lose_create_answers,
    no_poller,
    prepare,
    provider_batches,
    run_batcher,
    steps_until_done,
    submit_batch,
    submit_batch_edit,
)
from tests.images import image_bytes
from tests.pipeline import execution, job
from tests.support import load_event

pytestmark = pytest.mark.usefixtures("calm_provider")


@pytest.fixture(autouse=True)
def batch_tier(settings_env: Any, stack: LocalStack) -> Iterator[None]:
    """Batches of three, sent at once; a batch takes the emulator 2 s."""
    prepare(settings_env, max_jobs=3, max_wait_s=0)
    assert stack.emulator is not None
    yield
    stack.emulator.config.batch_ms = 2000


# 1. Double billing: a lost create, then a list page that is not what find_batch expects.


@pytest.mark.parametrize("page", ["empty_page_with_has_more", "cursor_that_does_not_move"])
def test_a_lost_create_and_an_inconsistent_list_never_make_a_second_batch(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    # Given a batcher whose create reached the provider but whose answer was lost
    assert stack.emulator is not None
    prompts = [f"a lost create {page} {i} {time.time()}" for i in range(3)]
    accepted = [submit_batch(stack, prompt) for prompt in prompts]
    monkeypatch.setattr(batcher, "LEASE_S", 1.0)
    real_create = lose_create_answers(monkeypatch)
    run_batcher(stack)
    (batch_id,) = {job(a["id"]).batch_id for a in accepted}
    assert batch_id is not None and provider_batches(stack, batch_id) == 1
    monkeypatch.setattr(OpenAIBatchApi, "create_batch", real_create)

    # And a provider whose list of batches is, this once, not consistent: a first page that says there is more
    # but holds nothing, or a second page that starts where the first did (its cursor does not move)
    store = stack.emulator.batches
    real_page = store.page

    def inconsistent(query: dict[str, list[str]]) -> dict[str, Any]:
        sample = real_page({"limit": ["100"]})["data"][0]
        if page == "empty_page_with_has_more":
            return {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": True}
        # A newer batch of someone else's fills the page, and the next page starts at it again: the cursor stalls.
        other = {
            **sample,
            "id": "batch_unrelated0",
            "metadata": {"purpose": "another app"},
            "created_at": int(time.time()),
        }
        return {"object": "list", "data": [other], "first_id": other["id"], "last_id": other["id"], "has_more": True}

    monkeypatch.setattr(store, "page", inconsistent)

    # When a later run takes over the record once its lease has run out
    time.sleep(1.2)
    run_batcher(stack)

    # Then (rule: each job is submitted in exactly one batch and billed at most once) the provider holds one batch
    # for darkroom's batch id; find_batch must say "I could not tell" (raise), never "there is none"
    assert provider_batches(stack, batch_id) == 1, "a second provider batch was created: every line billed twice"


# 2. A pending record that can never move on: its jobs never end, and it blocks recovery of every later record.


def test_a_batch_whose_upload_is_refused_for_good_still_ends_every_job(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three batch jobs of two tenants, and OpenAI refusing the batch's input file for good (a 400)
    accepted = [submit_batch(stack, f"never uploaded {i} {time.time()}") for i in range(2)]
    accepted.append(submit_batch(stack, f"never uploaded, other tenant {time.time()}", tenant="dev-2"))
    monkeypatch.setattr(batcher, "LEASE_S", 1.0)

    def refused(self: OpenAIBatchApi, *args: Any, **kwargs: Any) -> str:
        raise ProviderRejected("File is too large", code="provider_rejected", status=400)

    monkeypatch.setattr(OpenAIBatchApi, "upload_file", refused)

    # When the batcher runs, and later runs carry the record on, again and again
    for _ in range(3):
        run_batcher(stack)
        time.sleep(1.1)
    # and a day has passed, so the sweeper looks at every one of them
    store = JobStore()
    for answer in accepted:
        store.sweep_again_at(job(answer["id"]), 1.0)
    stack.functions["SweeperFunction"].invoke(load_event("sweeper_schedule"))

    # Then (rule: every accepted job ends in exactly one terminal state) each job has ended, or can be canceled
    statuses = {a["id"]: job(a["id"]).status for a in accepted}
    canceled = cancel(stack, accepted[0]["id"])
    assert all(s in ("failed", "canceled") for s in statuses.values()), (statuses, canceled)


def test_one_edit_whose_input_cannot_be_read_does_not_hold_other_tenants_jobs_forever(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three batch edits of two tenants, one of which lost its stored input (S3's lifecycle expired it, say)
    accepted = [submit_batch_edit(stack, f"an edit {i} {time.time()}") for i in range(2)]
    poisoned = submit_batch_edit(stack, f"an edit without its input {time.time()}", tenant="dev-2")
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    boto3.client("s3").delete_object(Bucket=bucket, Key=poisoned["inputs"]["images"][0]["key"])
    monkeypatch.setattr(batcher, "LEASE_S", 1.0)

    # When the batcher runs, and carries the record on
    for _ in range(3):
        run_batcher(stack)
        time.sleep(1.1)

    # Then the other jobs were sent all the same (or at least ended), and the one that cannot be sent failed
    healthy = {job(a["id"]).status for a in accepted}
    assert healthy <= {"polling", "succeeded"}, ("other jobs held by one unreadable input", healthy)
    assert job(poisoned["id"]).status == "failed"


def test_old_stuck_records_do_not_hide_a_newer_record_that_needs_carrying_on(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given twenty old pending records a batcher holds (stuck ones are leased again at every takeover)
    store = BatchStore()
    now = time.time()
    for i in range(20):
        store.create(
            BatchRecord(
                id=f"dbatch_stuck{i:02d}{time.time_ns()}",
                tenant="dev",
                queue="gpt-image-2|generations",
                endpoint="/v1/images/generations",
                state="assembling",
                created_at=now - 86_400 + i,
                lease_id="someone",
                lease_until=now + 900,
            )
        )
    # And a newer record whose create's answer was lost
    accepted = [submit_batch(stack, f"behind stuck records {i} {time.time()}") for i in range(3)]
    monkeypatch.setattr(batcher, "LEASE_S", 1.0)
    real_create = lose_create_answers(monkeypatch)
    run_batcher(stack)
    monkeypatch.setattr(OpenAIBatchApi, "create_batch", real_create)
    (batch_id,) = {job(a["id"]).batch_id for a in accepted}

    # When later runs look for pending records once its lease has run out
    time.sleep(1.2)
    carried = run_batcher(stack)["carried_on"] + run_batcher(stack)["carried_on"]

    # Then it is carried on
    assert batch_id in carried, "pending_before(limit=20) returns only the 20 oldest, leased, records"


# 3. Reading results: one invocation's worth, then the same again, for ever.


class Invocation:
    """Lambda's remaining time in one invocation, where streaming a results line costs `line_ms` (a line must be
    downloaded and its base64 decoded before its custom_id is known, whether or not its job has ended)."""

    def __init__(self, start_ms: int, line_ms: int) -> None:
        self.left, self.line_ms = start_ms, line_ms

    def __call__(self) -> int:
        return self.left


def test_a_batch_whose_results_take_more_than_one_invocation_to_read_is_read_to_its_end(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a sent batch of three that has completed
    no_poller(monkeypatch)
    accepted = [submit_batch(stack, f"a long results file {i} {time.time()}") for i in range(3)]
    (batch_id,) = run_batcher(stack)["sent"]
    time.sleep(2.2)
    # And invocations with time for two and a half lines each before the reading reserve
    current = Invocation(0, 1000)
    real_read = OpenAIBatchApi.read_results

    def timed_read(self: OpenAIBatchApi, file_id: str, *, timeout_s: float) -> Any:
        for line in real_read(self, file_id, timeout_s=timeout_s):
            current.left -= current.line_ms
            yield line

    monkeypatch.setattr(OpenAIBatchApi, "read_results", timed_read)

    # When the poller's steps run, one invocation each, for as long as they say to carry on
    state = {"done": False, "polls": 0, "failed_polls": 0}
    for _ in range(30):
        current.left = follow.READ_RESERVE_MS + 2500
        state = follow.step(batch_id, state["polls"], state["failed_polls"], current)
        if state["done"]:
            break

    # Then every job has ended: each step must start where the last one stopped
    statuses = [job(a["id"]).status for a in accepted]
    assert state["done"] and statuses == ["succeeded"] * 3, (state, statuses)


# 4. Hostile or broken lines in a results file.

HOSTILE = {
    "garbage": b"this is not JSON at all",
    "no_custom_id": b'{"id":"batch_req_x","response":{"status_code":200,"body":{}},"error":null}',
    "huge_line": b'{"custom_id":"job_not_in_this_batch","response":{"status_code":200,"body":{"x":"'
    + b"A" * (5 * 1024 * 1024)
    + b'"}},"error":null}',
    "eleven_images": b'{"custom_id":"job_not_in_this_batch","response":{"status_code":200,"body":{"data":['
    + b",".join([b'{"b64_json":"' + base64.b64encode(image_bytes("png")) + b'"}'] * 11)
    + b']}},"error":null}',
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_one_broken_line_in_the_output_file_fails_only_itself(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # Given a batch of three whose output file holds one broken line after the first job's
    assert stack.emulator is not None
    no_poller(monkeypatch)
    provider = stack.emulator.batches
    real_output_file = provider._output_file

    def with_a_broken_line(batch: Any, file_kind: str, lines: list[bytes]) -> str | None:
        if file_kind == "output" and lines:
            lines = [lines[0], HOSTILE[kind], *lines[1:]]
        return real_output_file(batch, file_kind, lines)

    monkeypatch.setattr(provider, "_output_file", with_a_broken_line)
    prompts = [f"beside a broken line {kind} {i} {time.time()}" for i in range(3)]
    accepted = [submit_batch(stack, prompt) for prompt in prompts]
    (batch_id,) = run_batcher(stack)["sent"]
    time.sleep(2.2)

    # When its poller reads it to the end
    steps_until_done(batch_id)

    # Then the jobs whose lines are fine (and were billed) have their images
    ended = {a["id"]: (job(a["id"]).status, (job(a["id"]).error or {}).get("code")) for a in accepted}
    assert all(batched(stack, prompt) == 1 for prompt in prompts)
    assert {status for status, _ in ended.values()} == {"succeeded"}, ended


# 5. Quotas: what the provider may bill must stay counted against the tenant.


def test_a_batch_job_canceled_after_its_batch_was_sent_stays_counted_against_its_budget(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a tenant with a budget, whose batch job goes out with two other jobs
    assert stack.emulator is not None
    stack.emulator.config.batch_ms = 6000
    no_poller(monkeypatch)
    name = f"quota-batch-{time.time_ns()}"
    key = tenants.create_api_key(name)
    quotas.set_limits(name, monthly_budget_usd=Decimal("5"))
    mine = f"canceled after sending {time.time()}"
    answer = submit_batch(stack, mine, key=key)
    reserved = quotas.committed_usd(name, quotas.month_of())
    assert reserved > 0
    others = [submit_batch(stack, f"wanted {i} {time.time()}", key=key) for i in range(2)]
    (batch_id,) = run_batcher(stack)["sent"]
    assert job(answer["id"]).status == "polling"

    # When the tenant cancels it (its line stays in the batch: OpenAI cancels whole batches only)
    status, canceled = cancel(stack, answer["id"], key=key)
    assert status == 200 and "may still run and be billed" in canceled["error"]["message"]
    time.sleep(6.2)
    steps_until_done(batch_id)

    # Then the provider did run and bill its line
    assert batched(stack, mine) == 1
    assert {job(o["id"]).status for o in others} == {"succeeded"}
    # And the tenant's budget still holds what it may have cost (its reservation, or the line's real cost)
    month = quotas.month_of()
    assert quotas.committed_usd(name, month) > 0, (
        f"reservation of ${reserved} given back and $0 spent, though OpenAI billed the line"
    )


# 6. darkroom's own short trouble must not throw away a day's billed results.


def test_a_few_seconds_of_storage_trouble_do_not_fail_a_whole_billed_batch(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch of three, and S3 refusing darkroom's first three writes of outputs (a few seconds of throttling)
    prompts = [f"stored after a blip {i} {time.time()}" for i in range(3)]
    accepted = [submit_batch(stack, prompt) for prompt in prompts]
    real_put = storage.put_output
    failures = {"left": 3}

    def blip(*args: Any, **kwargs: Any) -> Any:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("SlowDown: Please reduce your request rate.")
        return real_put(*args, **kwargs)

    monkeypatch.setattr(storage, "put_output", blip)

    # When the batch's poller follows it to its end (the real state machine, its Retry and Catch)
    (batch_id,) = run_batcher(stack)["sent"]
    history = execution(stack, batch_id, machine_name="BatchPollerStateMachine", timeout_s=60)

    # Then the results, which OpenAI billed and keeps for days, were not thrown away
    ended = {a["id"]: (job(a["id"]).status, (job(a["id"]).error or {}).get("code")) for a in accepted}
    assert all(batched(stack, prompt) == 1 for prompt in prompts)
    assert {status for status, _ in ended.values()} == {"succeeded"}, (history["status"], ended)


# 7. Retention: a tenant's edit inputs, uploaded to OpenAI for a batch line, are never removed there.


def test_the_files_a_batch_uploads_to_openai_do_not_outlive_the_retention_darkroom_keeps(
    stack: LocalStack,
) -> None:
    # Given a batch of three edits that has ended
    assert stack.emulator is not None
    accepted = [submit_batch_edit(stack, f"an edit kept at OpenAI {i} {time.time()}") for i in range(3)]
    before = set(stack.emulator.batches.files)
    (batch_id,) = run_batcher(stack)["sent"]
    execution(stack, batch_id, machine_name="BatchPollerStateMachine")
    assert {job(a["id"]).status for a in accepted} == {"succeeded"}

    # Then the files darkroom uploaded (the tenants' input images, the JSONL of their prompts) are deleted, or at
    # least expire (OpenAI's Files API takes expires_after), as inputs/ and outputs/ do under OutputRetentionDays
    uploaded = [
        f for fid, f in stack.emulator.batches.files.items() if fid not in before and f.purpose != "batch_output"
    ]
    assert uploaded, "the batch uploaded its input images and its JSONL"
    kept_forever = [(f.purpose, f.filename) for f in uploaded if f.expires_at is None]
    assert kept_forever == [], kept_forever
