"""Previews against moto's server and the emulator: budgets, hostile gateways, and what reaches the job a tenant
reads."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import boto3
import httpx
import pytest

from darkroom import storage
from darkroom.jobs import run
from darkroom.providers import registry
from darkroom.providers.openai import OpenAICompatibleProvider
from darkroom_local.stack import LocalStack
from tests.pipeline import deliver, job, queue_url, receive, submit
from tests.support import drain, http_event, response_json
from tests.unit.test_streamed_images import completed, partial

pytestmark = pytest.mark.usefixtures("calm_provider")


@pytest.fixture(autouse=True)
def quiet_queues(stack: LocalStack) -> None:
    for name in ("JobsQueue", "CompletionsQueue", "WebhookRetryQueue"):
        drain(queue_url(stack, name))


def gateway(monkeypatch: pytest.MonkeyPatch, chunks: list[bytes]) -> None:
    """The job's route answers with these server-sent events, called with darkroom's real provider key."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))

    hostile = OpenAICompatibleProvider(
        "https://gw.example.com/v1", registry.provider_api_key, transport=httpx.MockTransport(handler)
    )
    monkeypatch.setattr(registry, "provider_for", lambda route: hostile)


def get_job(stack: LocalStack, job_id: str) -> dict[str, Any]:
    response = stack.functions["ApiFunction"].invoke(
        http_event("GET", f"/v1/jobs/{job_id}", api_key=stack.api_keys["dev"])
    )
    return dict(response_json(response))


@pytest.mark.parametrize("quality", ["low", "high"])
def test_a_jobs_budget_reservation_covers_its_previews(stack: LocalStack, quality: str) -> None:
    # Given a job asking for three previews (OpenAI bills 100 output tokens each, as the emulator does)
    job_id = submit(stack, prompt=f"a budgeted harbour {quality}", size="1024x1024", quality=quality, partial_images=3)
    deliver(stack, receive(stack))
    ended = job(job_id)
    assert ended.status == "succeeded" and ended.quota is not None and ended.cost_usd is not None
    # Then its real cost is within the worst case reserved against the tenant's budget when it was admitted: the
    # reservation is what keeps concurrent submits from overspending together (darkroom.quotas)
    assert ended.cost_usd <= Decimal(ended.quota["usd"]), (ended.cost_usd, ended.quota)


def test_a_gateway_repeating_a_preview_cannot_multiply_darkrooms_writes(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a gateway that streams preview 0 forty times before the final image
    gateway(monkeypatch, [partial(0)] * 40 + [completed()])
    stored: list[int] = []
    put_preview = storage.put_preview

    def counted(*args: Any) -> dict[str, Any]:
        stored.append(args[1])
        return put_preview(*args)

    monkeypatch.setattr(storage, "put_preview", counted)
    job_id = submit(stack, prompt="a harbour, repeated previews", partial_images=2)
    deliver(stack, receive(stack))
    assert job(job_id).status == "succeeded"
    # Then darkroom stored (and wrote the job, and announced) preview 0 once, not once per event the gateway chose
    # to send
    events = 0
    while batch := receive(stack, "CompletionsQueue", wait_s=1):
        events += sum(1 for m in batch if ".progress.json" in m["Body"])
        for message in batch:
            boto3.client("sqs").delete_message(
                QueueUrl=queue_url(stack, "CompletionsQueue"), ReceiptHandle=message["ReceiptHandle"]
            )
    assert len(stored) <= 2 and events <= 2, f"{len(stored)} preview puts, {events} notify events"


def test_a_key_in_an_error_events_code_never_reaches_the_tenant(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a gateway whose error event echoes darkroom's own provider key in its code, with no message
    key = registry.provider_api_key()
    error = {"type": "error", "error": {"code": f"invalid_api_key:{key}"}}
    gateway(monkeypatch, [partial(0), f"event: error\ndata: {json.dumps(error)}\n\n".encode()])
    job_id = submit(stack, prompt="a harbour, leaky gateway", partial_images=1)
    deliver(stack, receive(stack))
    # Then the job fails, and nothing the tenant reads (the job, its manifest, its webhooks) carries the key
    document = get_job(stack, job_id)
    assert document["status"] == "failed"
    assert key not in json.dumps(document), document["error"]


def test_a_huge_error_code_still_fails_the_job_at_once_with_its_reason(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a gateway whose error event carries a 420 KB code (more than a DynamoDB item may hold)
    error = {"type": "error", "error": {"code": "E" * 420_000}}
    gateway(monkeypatch, [f"event: error\ndata: {json.dumps(error)}\n\n".encode()])
    job_id = submit(stack, prompt="a harbour, verbose gateway", partial_images=1)
    deliver(stack, receive(stack))
    # Then the job has ended, failed as the stream error it was
    ended = job(job_id)
    assert ended.status == "failed" and ended.error and ended.error["code"] == "provider_stream_error", (
        ended.status,
        ended.phase,
    )
    # and its error is as short as any redacted provider message (moto does not hold items to DynamoDB's 400 KB;
    # AWS refuses this write, the worker's message fails, and the job only ends once its lease runs out, as
    # `interrupted`)
    assert len(ended.error["message"]) < 1_000, len(ended.error["message"])


def test_jobs_with_previews_cannot_together_overspend_a_budget(stack: LocalStack) -> None:
    import uuid

    from darkroom import quotas, tenants
    from tests.pipeline import call_api

    # Given a fresh tenant whose monthly budget has room for exactly two such jobs, as darkroom reckons them
    name = f"quota-{uuid.uuid4().hex[:8]}"
    key = tenants.create_api_key(name)
    body = {"prompt": "a kite, previewed", "size": "1024x1024", "quality": "low", "partial_images": 3}
    worst = quotas.worst_case_usd("gpt-image-2", body, "openai")
    budget = worst * 2
    quotas.set_limits(name, monthly_budget_usd=budget)
    # When two are submitted (both admitted) and run
    for _ in range(2):
        status, answer = call_api(stack, http_event("POST", "/v1/images/generations", api_key=key, body=body))
        assert status == 202, answer
    assert deliver(stack, receive(stack))["batchItemFailures"] == []
    # Then what the tenant spent is within the budget ("concurrent submits can never together overspend")
    spent = quotas.committed_usd(name, quotas.month_of())
    assert spent <= budget, f"spent {spent} of a {budget} budget"


class WorkerKilled(BaseException):
    """Lambda ending the invocation: nothing in darkroom catches it."""


def test_recovery_never_takes_previews_for_outputs(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    from darkroom.jobs.store import JobStore

    # Given a worker killed after the provider answered and both previews were stored, before the image was
    def killed(*args: Any) -> None:
        raise WorkerKilled()

    monkeypatch.setattr(storage, "put_output", killed)
    job_id = submit(stack, prompt="a harbour, worker killed", partial_images=2)
    with pytest.raises(WorkerKilled):
        deliver(stack, receive(stack))
    monkeypatch.undo()
    stuck = job(job_id)
    assert stuck.status == "running" and stuck.phase == "storing" and len(stuck.previews) == 2
    # When its lease has run out and the sweeper recovers it
    boto3.client("dynamodb").update_item(
        TableName=JobStore().table,
        Key={"id": {"S": job_id}},
        UpdateExpression="SET lease_until = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )
    run.recover_abandoned(JobStore(), job(job_id))
    # Then partial-0.png, partial-1.png and their progress documents were not taken for the job's image
    ended = job(job_id)
    assert ended.status == "failed" and ended.error and ended.error["code"] == "interrupted"
    assert ended.outputs == []
