"""Driving the batch tier by hand in the module stack: batch jobs submitted, the batcher run, a batch's steps taken,
and the provider's own view of what it made and billed."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from darkroom import aws
from darkroom.batches import batcher, follow
from darkroom.batches.records import BatchStore
from darkroom.errors import ProviderAmbiguous
from darkroom.jobs.store import JobStore, LeaseLost
from darkroom.providers.batches import OpenAIBatchApi
from darkroom_local.schedules import scheduled_event
from darkroom_local.stack import LocalStack
from tests.images import image_bytes
from tests.pipeline import call_api
from tests.support import http_event


def prepare(settings_env: Any, *, max_jobs: int, max_wait_s: int) -> None:
    """Batches of `max_jobs`, sent once their oldest has waited `max_wait_s`; no job waiting and no batch pending
    from an earlier test (the stack is shared by the module)."""
    settings_env(BATCH_MAX_JOBS=str(max_jobs), BATCH_MAX_WAIT_S=str(max_wait_s))
    store = JobStore()
    for queue in batcher.queues():
        for waiting in store.waiting_for_batch(queue):
            found = store.get(waiting.id)
            if found is not None:
                with contextlib.suppress(LeaseLost):
                    store.cancel(found)
    db, table = aws.client("dynamodb"), BatchStore().table
    for item in db.scan(TableName=table).get("Items", []):
        if "pending" in item:
            db.update_item(
                TableName=table,
                Key={"id": item["id"]},
                UpdateExpression="SET #s = :ended REMOVE pending",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":ended": {"S": "ended"}},
            )


def submit_batch(
    stack: LocalStack, prompt: str, tenant: str = "dev", *, key: str | None = None, **body: Any
) -> dict[str, Any]:
    event = http_event(
        "POST",
        "/v1/images/generations",
        api_key=key or stack.api_keys[tenant],
        body={"prompt": prompt, "tier": "batch", "quality": "low", **body},
    )
    status, answer = call_api(stack, event)
    assert status == 202, answer
    return dict(answer)


def submit_batch_edit(stack: LocalStack, prompt: str, tenant: str = "dev") -> dict[str, Any]:
    image = {"b64_json": base64.b64encode(image_bytes("png", (64, 48))).decode()}
    body = {"prompt": prompt, "tier": "batch", "quality": "low", "images": [image]}
    status, answer = call_api(stack, http_event("POST", "/v1/images/edits", api_key=stack.api_keys[tenant], body=body))
    assert status == 202, answer
    return dict(answer)


def run_batcher(stack: LocalStack) -> dict[str, list[str]]:
    """One scheduled run of the batches function."""
    return dict(stack.functions["BatchesFunction"].invoke(scheduled_event("batcher")))


def get_job(stack: LocalStack, job_id: str, tenant: str = "dev") -> tuple[int, Any]:
    return call_api(stack, http_event("GET", f"/v1/jobs/{job_id}", api_key=stack.api_keys[tenant]))


def cancel(stack: LocalStack, job_id: str, tenant: str = "dev", *, key: str | None = None) -> tuple[int, Any]:
    return call_api(stack, http_event("DELETE", f"/v1/jobs/{job_id}", api_key=key or stack.api_keys[tenant]))


def provider_batches(stack: LocalStack, batch_id: str) -> int:
    """How many batches the provider holds for darkroom's batch id: what a second creation would show."""
    assert stack.emulator is not None
    held = stack.emulator.batches.batches.values()
    return sum(1 for batch in held if batch.describe().get("metadata", {}).get(batcher.METADATA_KEY) == batch_id)


def batched(stack: LocalStack, prompt: str) -> int:
    """Lines the provider ran, and billed, for this prompt."""
    assert stack.emulator is not None
    return int(stack.emulator.calls()["prompts"].get(prompt, {}).get("batched", 0))


def no_poller(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's poller execution is not started: the test runs its steps itself, with the clock it chooses."""
    monkeypatch.setattr(batcher.executions, "start", lambda *args, **kwargs: True)


def lose_create_answers(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Every batch create reaches the provider, which makes the batch, and its answer is lost on the way back.
    Returns the real create, to put back."""
    real_create = OpenAIBatchApi.create_batch

    def answer_lost(self: OpenAIBatchApi, *args: Any, **kwargs: Any) -> Any:
        real_create(self, *args, **kwargs)
        raise ProviderAmbiguous("the provider's answer was lost", code="provider_timeout")

    monkeypatch.setattr(OpenAIBatchApi, "create_batch", answer_lost)
    return real_create


def steps_until_done(batch_id: str, remaining_ms: Any = lambda: 300_000, limit: int = 20) -> dict[str, Any]:
    state = {"done": False, "polls": 0, "failed_polls": 0}
    for _ in range(limit):
        state = follow.step(batch_id, state["polls"], state["failed_polls"], remaining_ms)
        if state["done"]:
            break
    return state
