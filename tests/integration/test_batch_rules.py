"""The batch tier's rules, held across its features: batch edits (JSON, multipart with a mask, every input format)
accepted by the emulator, uploads, idempotency, Prefer: wait, listing, GET at every stage, manifests, a forged line
for another batch's job, duplicate lines, and overlapping takeovers of one pending record."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import pytest

from darkroom.batches import batcher
from darkroom.jobs.store import JobStore
from darkroom_local.stack import LocalStack
from tests.batches import lose_create_answers, prepare, run_batcher, submit_batch
from tests.images import image_bytes, mask_bytes
from tests.pipeline import call_api, execution, job, sdk_edit_event
from tests.support import http_event

pytestmark = pytest.mark.usefixtures("calm_provider")


@pytest.fixture(autouse=True)
def batch_tier(settings_env: Any) -> None:
    prepare(settings_env, max_jobs=3, max_wait_s=0)


def b64(data: bytes) -> dict[str, str]:
    return {"b64_json": base64.b64encode(data).decode()}


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_a_json_batch_edit_in_every_input_format_succeeds(stack: LocalStack, fmt: str) -> None:
    body = {
        "prompt": f"batched edit {fmt} {time.time()}",
        "tier": "batch",
        "quality": "low",
        "images": [b64(image_bytes(fmt, (64, 48)))],
    }
    status, accepted = call_api(stack, http_event("POST", "/v1/images/edits", api_key=stack.api_keys["dev"], body=body))
    assert status == 202, accepted
    assert accepted["status"] == "batch_queued"
    report = run_batcher(stack)
    (batch_id,) = report["sent"]
    assert execution(stack, batch_id, machine_name="BatchPollerStateMachine")["status"] == "SUCCEEDED"
    done = job(accepted["id"])
    assert done.status == "succeeded", done.error


def test_the_sdks_multipart_batch_edit_with_a_mask_succeeds(stack: LocalStack) -> None:
    images = [io.BytesIO(image_bytes("png", (64, 48))) for _ in range(2)]
    mask = io.BytesIO(mask_bytes((64, 48), hole=(0, 0, 32, 24)))
    event = sdk_edit_event(
        stack,
        model="gpt-image-2",
        image=images,
        mask=mask,
        prompt=f"sdk batch {time.time()}",
        extra_body={"tier": "batch"},
    )
    status, accepted = call_api(stack, event)
    assert status == 202, accepted
    assert accepted["status"] == "batch_queued", accepted
    (batch_id,) = run_batcher(stack)["sent"]
    execution(stack, batch_id, machine_name="BatchPollerStateMachine")
    done = job(accepted["id"])
    assert done.status == "succeeded", done.error


def test_an_idempotency_key_replays_a_batch_job(stack: LocalStack) -> None:
    body = {"prompt": f"idem {time.time()}", "tier": "batch", "quality": "low"}

    def ev() -> dict[str, Any]:
        return http_event(
            "POST",
            "/v1/images/generations",
            api_key=stack.api_keys["dev"],
            body=body,
            headers={"Idempotency-Key": f"k-{body['prompt']}"},
        )

    s1, a1 = call_api(stack, ev())
    s2, a2 = call_api(stack, ev())
    assert (s1, s2) == (202, 202), (a1, a2)
    assert a1["id"] == a2["id"]
    # same key, standard tier: a different body
    body2 = dict(body)
    body2.pop("tier")
    s3, a3 = call_api(
        stack,
        http_event(
            "POST",
            "/v1/images/generations",
            api_key=stack.api_keys["dev"],
            body=body2,
            headers={"Idempotency-Key": f"k-{body['prompt']}"},
        ),
    )
    assert s3 == 422 and a3["error"]["code"] == "idempotency_key_reused", a3  # darkroom's existing rule


def test_prefer_wait_is_not_applied_to_a_batch_job(stack: LocalStack) -> None:
    body = {"prompt": f"wait {time.time()}", "tier": "batch", "quality": "low"}
    s, a = call_api(
        stack,
        http_event(
            "POST", "/v1/images/generations", api_key=stack.api_keys["dev"], body=body, headers={"Prefer": "wait=5"}
        ),
    )
    assert s == 202, a


def test_batch_queued_jobs_are_listed_by_their_status(stack: LocalStack) -> None:
    body = {"prompt": f"list {time.time()}", "tier": "batch", "quality": "low"}
    s, a = call_api(stack, http_event("POST", "/v1/images/generations", api_key=stack.api_keys["dev"], body=body))
    s, listing = call_api(
        stack, http_event("GET", "/v1/jobs", api_key=stack.api_keys["dev"], query={"status": "batch_queued"})
    )
    assert s == 200, listing
    assert a["id"] in [j["id"] for j in listing["data"]]


def test_an_upload_edit_on_the_batch_tier_is_batched_once_its_files_arrive(stack: LocalStack) -> None:
    from tests.integration.test_uploads import open_upload, post_file, run_uploads_function
    from tests.pipeline import receive

    status, opened = open_upload(
        stack, {"prompt": f"uploaded batch {time.time()}", "tier": "batch", "files": {"images": 1, "mask": True}}
    )
    assert status == 201, opened
    posts = {post["field"]: post for post in opened["uploads"]}
    assert post_file(posts["image[0]"], image_bytes("jpeg", (64, 48)), "image/png").status_code == 204
    assert post_file(posts["mask"], mask_bytes((64, 48), hole=(0, 0, 32, 24))).status_code == 204
    run_uploads_function(stack)
    queued = job(opened["id"])
    assert queued.status == "batch_queued" and queued.batch_queue, queued
    assert receive(stack) == []
    (batch_id,) = run_batcher(stack)["sent"]
    execution(stack, batch_id, machine_name="BatchPollerStateMachine")
    done = job(opened["id"])
    assert done.status == "succeeded", done.error


def test_a_batch_job_is_read_without_error_at_every_stage(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    from darkroom.batches.records import BatchStore

    body = {"prompt": f"stages {time.time()}", "tier": "batch", "quality": "low"}
    _s, a = call_api(stack, http_event("POST", "/v1/images/generations", api_key=stack.api_keys["dev"], body=body))

    def get() -> tuple[int, Any]:
        return call_api(stack, http_event("GET", f"/v1/jobs/{a['id']}", api_key=stack.api_keys["dev"]))

    def lst() -> tuple[int, Any]:
        return call_api(stack, http_event("GET", "/v1/jobs", api_key=stack.api_keys["dev"]))

    assert get()[0] == 200 and lst()[0] == 200
    store = JobStore()
    claimed = store.claim_for_batch(job(a["id"]), "dbatch_doesnotexist")
    st, shown = get()
    assert st == 200, shown
    assert shown["provider"]["batch"] == {"id": "dbatch_doesnotexist"}  # a batch not yet recorded shows its id
    assert lst()[0] == 200
    # a cancel while claimed: 409 job_batching
    st, c = call_api(stack, http_event("DELETE", f"/v1/jobs/{a['id']}", api_key=stack.api_keys["dev"]))
    assert st == 409 and c["error"]["code"] == "job_batching", c
    # record read fails -> still 200
    monkeypatch.setattr(BatchStore, "get", lambda self, i: (_ for _ in ()).throw(RuntimeError("boom")))
    assert get()[0] == 200
    store.fail_batch_queued(claimed, code="x", message="y")


def test_a_batch_job_gets_its_manifest_when_it_ends(stack: LocalStack) -> None:
    from tests.pipeline import manifest

    body = {
        "prompt": f"manifest {time.time()}",
        "tier": "batch",
        "quality": "low",
        "webhook_url": "https://example.com/hook",
    }
    s, a = call_api(stack, http_event("POST", "/v1/images/generations", api_key=stack.api_keys["dev"], body=body))
    assert s == 202, a
    st, _c = call_api(stack, http_event("DELETE", f"/v1/jobs/{a['id']}", api_key=stack.api_keys["dev"]))
    assert st == 200
    m = manifest(stack, job(a["id"]))
    assert m["status"] == "canceled"


def test_line_for_another_batchs_job_is_ignored_and_duplicates_first_wins(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from darkroom.batches import follow

    monkeypatch.setattr(batcher.executions, "start", lambda *a, **k: True)
    # batch B (other tenant) sent first, left polling
    b_jobs = [submit_batch(stack, f"B {i} {time.time()}", tenant="dev-2") for i in range(3)]
    (_b_batch,) = run_batcher(stack)["sent"]
    victim = b_jobs[0]["id"]
    assert stack.emulator is not None
    provider = stack.emulator.batches
    real = provider._output_file

    def hostile(batch: Any, kind: str, lines: list[bytes]) -> Any:
        if kind == "output" and lines:
            forged = lines[0].replace(lines[0][lines[0].index(b'"custom_id":"') + 13 :].split(b'"')[0], victim.encode())
            lines = [forged, *lines, lines[0]]  # a line for B's job, and a duplicate of the first
        return real(batch, kind, lines)

    monkeypatch.setattr(provider, "_output_file", hostile)
    a_jobs = [submit_batch(stack, f"A {i} {time.time()}", tenant="dev") for i in range(3)]
    (a_batch,) = run_batcher(stack)["sent"]
    time.sleep(2.2)
    state = {"polls": 0, "failed_polls": 0}
    for _ in range(5):
        state = follow.step(a_batch, state["polls"], state["failed_polls"], lambda: 300_000)
        if state["done"]:
            break
    assert state["done"]
    assert job(victim).status == "polling" and not job(victim).outputs
    assert {job(a["id"]).status for a in a_jobs} == {"succeeded"}


def test_two_batchers_take_over_the_same_pending_record(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from darkroom.providers.batches import OpenAIBatchApi

    accepted = [
        call_api(
            stack,
            http_event(
                "POST",
                "/v1/images/generations",
                api_key=stack.api_keys["dev"],
                body={"prompt": f"T {i} {time.time()}", "tier": "batch", "quality": "low"},
            ),
        )[1]
        for i in range(3)
    ]
    monkeypatch.setattr(batcher, "LEASE_S", 1.0)
    real_create = lose_create_answers(monkeypatch)
    batcher.run(lambda: 300_000)
    monkeypatch.setattr(OpenAIBatchApi, "create_batch", real_create)
    (bid,) = {job(a["id"]).batch_id for a in accepted}
    time.sleep(1.2)
    results = []
    barrier = threading.Barrier(3)

    def go() -> None:
        barrier.wait()
        results.append(batcher.run(lambda: 300_000))

    ts = [threading.Thread(target=go) for _ in range(3)]
    for thread in ts:
        thread.start()
    for thread in ts:
        thread.join()
    carried = [r["carried_on"] for r in results]
    assert stack.emulator is not None
    held = len([b for b in stack.emulator.batches.batches.values() if (b.metadata or {}).get("darkroom_batch") == bid])
    assert held == 1, (held, carried)
    assert sum(bid in c for c in carried) == 1, carried
