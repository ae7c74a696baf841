"""The batch tier against moto's server and the emulator's Batch API: jobs queued for a batch, sent in exactly one,
followed to their end, each with its own images and half-price cost."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from darkroom import pricing
from darkroom.batches import batcher
from darkroom.batches.records import BatchStore
from darkroom.providers.batches import OpenAIBatchApi
from darkroom_local.stack import LocalStack
from tests.batches import get_job, prepare, provider_batches, run_batcher, submit_batch
from tests.pipeline import execution, job, receive, transitions
from tests.support import http_event, response_json

pytestmark = pytest.mark.usefixtures("calm_provider")


@pytest.fixture(autouse=True)
def batch_tier(settings_env: Any) -> None:
    """Batches of three, sent once full."""
    prepare(settings_env, max_jobs=3, max_wait_s=3600)


def test_batch_jobs_go_out_in_one_batch_and_each_ends_with_its_own_images_at_half_price(stack: LocalStack) -> None:
    # Given three batch-tier jobs
    prompts = [f"a batched lighthouse {i} {time.time()}" for i in range(3)]
    accepted = [submit_batch(stack, prompt) for prompt in prompts]
    assert {answer["status"] for answer in accepted} == {"batch_queued"}
    assert receive(stack) == []  # no worker message: the batcher sends them
    # When the batcher runs (the queue is full at three), twice, as overlapping schedules might
    first, second = run_batcher(stack), run_batcher(stack)
    (batch_id,) = first["sent"]
    assert second["sent"] == []
    # Then the jobs poll one provider batch, and show it
    polling = job(accepted[0]["id"])
    assert polling.status == "polling" and polling.batch_id == batch_id and polling.prediction_id
    status, shown = get_job(stack, polling.id)
    assert status == 200 and shown["provider"]["tier"] == "batch"
    assert shown["provider"]["batch"]["id"] == batch_id and shown["provider"]["job_id"] == polling.prediction_id
    # and once the batch's poller has followed it to its end, each job has its images at the batch price
    history = execution(stack, batch_id, machine_name="BatchPollerStateMachine")
    assert history["status"] == "SUCCEEDED"
    for answer, prompt in zip(accepted, prompts, strict=True):
        done = job(answer["id"])
        assert done.status == "succeeded", done.error
        assert len(done.outputs) == 1 and done.usage
        assert done.cost_usd == pricing.cost_usd("gpt-image-2", done.usage, batch=True)
        # half the standard price, each rounded to a millionth: within half a millionth of the rounded full price's half
        # (0.005925 full is 0.002963 batched, not 0.0029625)
        assert abs(done.cost_usd - pricing.cost_usd("gpt-image-2", done.usage) / 2) <= Decimal("0.0000005")
        # billed once, by the provider's own count, through its batch
        count = stack.emulator.calls()["prompts"][prompt]  # type: ignore[union-attr]
        assert (count["generations"], count["batched"]) == (1, 1)
        # and its share of the batch's AWS use: the batcher's run and the poller's steps, split three ways
        assert done.aws["sfn_transitions"] >= 1 and done.aws["lambda_requests"] >= 3
        assert done.aws["s3_bytes_stored"] >= done.outputs[0]["bytes"] and done.aws["lambda_mb_ms"] > 0
    record = BatchStore().get(batch_id)
    assert record is not None and record.state == "ended" and sorted(record.jobs) == sorted(a["id"] for a in accepted)
    assert transitions(history)[0] == "WaitForBatch"


def test_a_batch_job_is_canceled_before_it_is_sent_and_never_sent(stack: LocalStack) -> None:
    answer = submit_batch(stack, f"a canceled batch job {time.time()}")
    response = stack.functions["ApiFunction"].invoke(
        http_event("DELETE", f"/v1/jobs/{answer['id']}", api_key=stack.api_keys["dev"])
    )
    assert response["statusCode"] == 200, response["body"]
    assert job(answer["id"]).status == "canceled"


def test_another_tenants_batch_job_is_a_404(stack: LocalStack) -> None:
    answer = submit_batch(stack, f"a private batch job {time.time()}")
    assert get_job(stack, answer["id"], tenant="dev-2")[0] == 404


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"partial_images": 2}, "partial_images", "partial_images_not_batched"),
        ({"provider": "wavespeed"}, "tier", "provider_not_supported"),
        ({"tier": "cheap"}, "tier", "literal_error"),
    ],
)
def test_what_the_batch_tier_cannot_do_is_a_422_naming_the_field(
    stack: LocalStack, body: dict[str, Any], field: str, rule: str
) -> None:
    event = http_event(
        "POST",
        "/v1/images/generations",
        api_key=stack.api_keys["dev"],
        body={"prompt": "p", "tier": "batch", **body},
    )
    response = stack.functions["ApiFunction"].invoke(event)
    assert response["statusCode"] == 422, response["body"]
    fields = {(f["field"], f["rule"]) for f in response_json(response)["error"]["fields"]}
    assert (field, rule) in fields, fields


def test_a_batcher_dying_after_the_provider_made_its_batch_never_makes_a_second(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batcher whose record of the provider's batch is never written (it dies right after creating it)
    prompts = [f"a batch that outlives its batcher {i} {time.time()}" for i in range(3)]
    accepted = [submit_batch(stack, prompt) for prompt in prompts]
    monkeypatch.setattr(batcher, "LEASE_S", 1.0)
    real_advance = BatchStore.advance

    def dies_once_created(self: BatchStore, record: Any, *, expected_state: str, **sets: Any) -> Any:
        if sets.get("state") == "submitted":
            raise RuntimeError("the batcher's invocation was killed")
        return real_advance(self, record, expected_state=expected_state, **sets)

    monkeypatch.setattr(BatchStore, "advance", dies_once_created)
    assert run_batcher(stack)["sent"] == []
    (waiting,) = {job(a["id"]).batch_id for a in accepted}
    assert waiting is not None and provider_batches(stack, waiting) == 1
    assert {job(a["id"]).status for a in accepted} == {"batch_queued"}
    # When a later run finds the record pending once its lease has run out
    monkeypatch.setattr(BatchStore, "advance", real_advance)
    time.sleep(1.2)
    assert run_batcher(stack)["carried_on"] == [waiting]
    # Then it found the provider's batch by its metadata instead of making another, and every job ends once
    assert provider_batches(stack, waiting) == 1
    assert execution(stack, waiting, machine_name="BatchPollerStateMachine")["status"] == "SUCCEEDED"
    for answer, prompt in zip(accepted, prompts, strict=True):
        assert job(answer["id"]).status == "succeeded"
        assert stack.emulator.calls()["prompts"][prompt]["batched"] == 1  # type: ignore[union-attr]


def test_a_batcher_dying_before_its_upload_is_carried_on_by_the_next(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    accepted = [submit_batch(stack, f"a batch never uploaded {i} {time.time()}") for i in range(3)]
    monkeypatch.setattr(batcher, "LEASE_S", 1.0)
    real_upload = OpenAIBatchApi.upload_file

    def unreachable(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("the invocation was killed before its upload")

    monkeypatch.setattr(OpenAIBatchApi, "upload_file", unreachable)
    assert run_batcher(stack)["sent"] == []
    monkeypatch.setattr(OpenAIBatchApi, "upload_file", real_upload)
    time.sleep(1.2)
    (carried,) = run_batcher(stack)["carried_on"]
    assert execution(stack, carried, machine_name="BatchPollerStateMachine")["status"] == "SUCCEEDED"
    assert {job(a["id"]).status for a in accepted} == {"succeeded"}


def test_batchers_running_at_once_put_each_job_in_exactly_one_batch(stack: LocalStack, settings_env: Any) -> None:
    import threading

    # Given six waiting jobs, batches of three, and four batchers started together
    settings_env(BATCH_MAX_JOBS="3", BATCH_MAX_WAIT_S="0")
    prompts = [f"a contested batch job {i} {time.time()}" for i in range(6)]
    accepted = [submit_batch(stack, prompt) for prompt in prompts]
    sent: list[str] = []
    barrier = threading.Barrier(4)

    def one_run() -> None:
        barrier.wait()
        sent.extend(batcher.run(lambda: 300_000)["sent"])

    runs = [threading.Thread(target=one_run) for _ in range(4)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    # Then every job is in exactly one batch, every batch followed to its end, and every job billed once
    batches = {job(a["id"]).batch_id for a in accepted}
    assert None not in batches and batches <= set(sent), (batches, sent)
    members = [member for batch_id in sent for member in (BatchStore().get(batch_id).jobs or [])]  # type: ignore[union-attr]
    assert sorted(members) == sorted(a["id"] for a in accepted), "a job in two batches, or in none"
    for batch_id in sent:
        assert execution(stack, batch_id, machine_name="BatchPollerStateMachine")["status"] == "SUCCEEDED"
    for answer, prompt in zip(accepted, prompts, strict=True):
        assert job(answer["id"]).status == "succeeded"
        assert stack.emulator.calls()["prompts"][prompt]["batched"] == 1  # type: ignore[union-attr]


def test_an_expired_batch_ends_what_it_ran_and_fails_the_rest(stack: LocalStack) -> None:
    assert stack.emulator is not None
    stack.emulator.config.batch_outcome = "expire"
    try:
        accepted = [submit_batch(stack, f"an expiring batch job {i} {time.time()}") for i in range(3)]
        (batch_id,) = run_batcher(stack)["sent"]
        assert execution(stack, batch_id, machine_name="BatchPollerStateMachine")["status"] == "SUCCEEDED"
    finally:
        stack.emulator.config.batch_outcome = "complete"
    ended = [job(a["id"]) for a in accepted]
    assert {j.status for j in ended} == {"succeeded", "failed"}
    for failed in (j for j in ended if j.status == "failed"):
        assert failed.error and failed.error["code"] == "batch_expired" and failed.cost_usd is None


def test_a_refused_line_fails_its_own_job_only(stack: LocalStack) -> None:
    accepted = [submit_batch(stack, f"a fine batch job {i} {time.time()}") for i in range(2)]
    refused = submit_batch(stack, f"[refuse] a batch job {time.time()}")
    (batch_id,) = run_batcher(stack)["sent"]
    assert execution(stack, batch_id, machine_name="BatchPollerStateMachine")["status"] == "SUCCEEDED"
    assert {job(a["id"]).status for a in accepted} == {"succeeded"}
    failed = job(refused["id"])
    assert failed.status == "failed" and failed.error and failed.error["code"] == "moderation_blocked"


def test_canceling_every_job_of_a_sent_batch_cancels_the_batch(stack: LocalStack, settings_env: Any) -> None:
    # Given a sent batch that takes a while
    assert stack.emulator is not None
    stack.emulator.config.batch_ms = 30_000
    try:
        accepted = [submit_batch(stack, f"an unwanted batch job {i} {time.time()}") for i in range(3)]
        (batch_id,) = run_batcher(stack)["sent"]
        # When its tenant cancels every job in it
        for answer in accepted:
            response = stack.functions["ApiFunction"].invoke(
                http_event("DELETE", f"/v1/jobs/{answer['id']}", api_key=stack.api_keys["dev"])
            )
            assert response["statusCode"] == 200, response["body"]
            assert "whole batches only" in response_json(response)["error"]["message"]
        # Then the poller asks OpenAI to cancel the batch, and follows it to its end
        assert execution(stack, batch_id, machine_name="BatchPollerStateMachine")["status"] == "SUCCEEDED"
    finally:
        stack.emulator.config.batch_ms = 2000
    record = BatchStore().get(batch_id)
    assert record is not None and record.cancel_requested and record.provider_status == "cancelled"
    assert {job(a["id"]).status for a in accepted} == {"canceled"}


def test_batches_under_provider_faults_send_each_job_once_and_end_every_job(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, settings_env: Any
) -> None:
    import os
    import random

    # Given a provider whose Files and Batch calls fail half the time: 429s, 500s, and slow answers (a batch made,
    # its answer lost), and batchers whose leases run out in a second
    seed = int(os.environ.get("DARKROOM_FAULT_SEED", random.randrange(1_000_000)))
    print(f"batch fault run seed {seed} (replay with DARKROOM_FAULT_SEED={seed})")
    assert stack.emulator is not None
    settings_env(BATCH_MAX_JOBS="4", BATCH_MAX_WAIT_S="0")
    monkeypatch.setattr(batcher, "LEASE_S", 1.0)
    monkeypatch.setattr(batcher, "CALL_TIMEOUT_S", 2.0)
    # Leases of a second are taken over dozens of times here: no record is given up for that (a real one would
    # be after an hour and a half of such faults).
    monkeypatch.setattr(batcher, "MAX_CARRIES", 1000)
    prompts = [f"a batch under faults {i} {seed}" for i in range(12)]
    accepted = [submit_batch(stack, prompt) for prompt in prompts]
    stack.emulator.config.fault_rate = 0.5
    stack.emulator.config.fault_kinds = ("rate_limit", "server_error", "slow")
    stack.emulator.config.hang_ms = 2_500
    stack.emulator._random = random.Random(seed)
    try:
        # When the batcher runs again and again, as its schedule would, until no job waits for a batch
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            batcher.run(lambda: 300_000)
            if all(job(a["id"]).status not in ("batch_queued",) for a in accepted):
                break
            time.sleep(1.1)  # past the lease of a batcher that lost an answer
        # Then every batch followed runs to its end
        batch_ids = {job(a["id"]).batch_id for a in accepted}
        for batch_id in batch_ids:
            assert batch_id is not None, f"seed {seed}: a job never went out"
            execution(stack, batch_id, machine_name="BatchPollerStateMachine", timeout_s=60)
    finally:
        stack.emulator.config.fault_rate = 0.0
    # and every job has ended, once, each sent in one provider batch and billed at most once by the provider's count
    ended = {a["id"]: job(a["id"]) for a in accepted}
    assert all(j.terminal for j in ended.values()), f"seed {seed}: {[(i, j.status) for i, j in ended.items()]}"
    for batch_id in batch_ids:
        assert provider_batches(stack, str(batch_id)) == 1, f"seed {seed}: batch {batch_id} made twice"
    for prompt in prompts:
        assert stack.emulator.calls()["prompts"][prompt]["batched"] <= 1, f"seed {seed}: {prompt} billed twice"
    # (transient faults only: each was tried again until it went through)
    assert {j.status for j in ended.values()} == {"succeeded"}, f"seed {seed}: {[j.error for j in ended.values()]}"


def test_a_batch_holds_one_tenants_jobs_only(stack: LocalStack, settings_env: Any) -> None:
    # Given two tenants' batch jobs waiting in the same queue (same model, same endpoint)
    settings_env(BATCH_MAX_JOBS="10", BATCH_MAX_WAIT_S="0")
    mine = [submit_batch(stack, f"my batch job {i} {time.time()}") for i in range(2)]
    theirs = [submit_batch(stack, f"their batch job {i} {time.time()}", tenant="dev-2") for i in range(3)]
    # When the batcher sends them
    sent = run_batcher(stack)["sent"]
    # Then each tenant's jobs went in a batch of their own, whose status and counts only that tenant sees
    assert len(sent) == 2
    (my_batch,) = {job(a["id"]).batch_id for a in mine}
    (their_batch,) = {job(a["id"]).batch_id for a in theirs}
    assert my_batch != their_batch
    for batch_id in sent:
        execution(stack, batch_id, machine_name="BatchPollerStateMachine")
    status, shown = get_job(stack, mine[0]["id"])
    assert status == 200 and shown["provider"]["batch"]["id"] == my_batch
    assert shown["provider"]["batch"]["jobs"] == 2 and shown["provider"]["batch"]["request_counts"]["total"] == 2
