"""The cost ledger through the local stack: what each job used in AWS (counted from its steps' own requests and
time) and its cost, on the job, in its manifest, its webhook and the usage API."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from darkroom import ledger
from darkroom.jobs.store import JobStore, LeaseLost
from darkroom_local.lambdas import LambdaContext
from darkroom_local.stack import LocalStack
from tests.pipeline import call_api, deliver, execution, job, manifest, queue_url, receive, submit
from tests.support import drain, http_event

pytestmark = pytest.mark.usefixtures("calm_provider")


def cost_of(stack: LocalStack, job_id: str) -> dict[str, Any]:
    status, found = call_api(stack, http_event("GET", f"/v1/jobs/{job_id}", api_key=stack.api_keys["dev"]))
    assert status == 200
    return dict(found["cost"])


def test_a_sync_job_records_its_api_and_worker_steps_and_their_cost(stack: LocalStack) -> None:
    # Given a job submitted through the api and run by the worker
    drain(queue_url(stack))
    job_id = submit(stack, prompt="a ledger", size="1024x1024", quality="low")
    assert deliver(stack, receive(stack)) == {"batchItemFailures": []}
    # Then its cost names both sides: the provider's from usage, AWS's from what its steps used
    cost = cost_of(stack, job_id)
    ended = job(job_id)
    assert ended.status == "succeeded" and cost["provider_usd"] == float(ended.cost_usd or 0) > 0
    use = cost["aws"]["usage"]
    assert use["apigw_requests"] == 1
    assert use["lambda_requests"] == 2  # the api's invocation and the worker's
    assert use["sqs_requests"] >= 3  # sent by the api; received and deleted for the worker
    assert use["dynamodb_write_units"] >= 4 and use["dynamodb_read_units"] >= 1
    assert use["s3_write_requests"] >= 2  # the image and the manifest
    assert use["s3_bytes_stored"] >= sum(output["bytes"] for output in ended.outputs)
    # Lambda time is metered at each function's own memory (the api's 512 MB, the worker's 768 MB)
    assert use["lambda_mb_ms"] >= 512 + 768 and use["lambda_mb_ms"] % 256 == 0
    expected = ledger.aws_usd(use, retention_days=30)
    assert Decimal(str(cost["aws_usd"])) == expected > 0
    assert cost["aws"]["prices_as_of"] == ledger.PRICES.as_of
    # And the manifest says the same, as it stood when written; the webhook's body carries it too
    stored = manifest(stack, ended)["cost"]
    assert stored["provider_usd"] == cost["provider_usd"] and 0 < stored["aws_usd"] <= cost["aws_usd"]
    # And the usage API sums AWS cost beside the provider's
    status, usage = call_api(stack, http_event("GET", "/v1/usage", api_key=stack.api_keys["dev"]))
    assert status == 200 and usage["total"]["cost"]["aws_usd"] >= stored["aws_usd"] > 0
    assert usage["total"]["cost"]["provider_usd"] == usage["total"]["cost_usd"]


def test_an_async_job_counts_its_polls_state_transitions(stack: LocalStack) -> None:
    assert stack.emulator is not None
    stack.emulator.wavespeed.processing_s = 1.0
    drain(queue_url(stack))
    job_id = submit(stack, prompt="a ledger lighthouse", provider="wavespeed", quality="low")
    assert deliver(stack, receive(stack))["batchItemFailures"] == []
    assert execution(stack, job_id)["status"] == "SUCCEEDED"
    use = cost_of(stack, job_id)["aws"]["usage"]
    assert use["sfn_transitions"] >= 3 and use["sfn_transitions"] % 3 == 0
    assert use["lambda_requests"] >= 3  # api, worker, at least one poll
    assert use["s3_bytes_stored"] >= sum(output["bytes"] for output in job(job_id).outputs)


def test_a_write_that_fails_keeps_its_use_for_the_next_and_no_job_takes_another_jobs_use(stack: LocalStack) -> None:
    drain(queue_url(stack))
    first, second = submit(stack, prompt="ledger one"), submit(stack, prompt="ledger two")
    store = JobStore()
    context = LambdaContext("WorkerFunction", 60, "request", memory_limit_in_mb=1024)
    before_first, before_second = dict(job(first).aws), dict(job(second).aws)
    with ledger.metering(context, sqs_requests=2) as meter:
        mine = job(first)  # one read, adopted below by the first write to `first`
        stale = JobStore().get(first)
        assert stale is not None
        stale.provider_calls += 1  # a view of the job that no longer holds: its write fails
        with pytest.raises(LeaseLost):
            store.claim(stale, 60)
        # The failed write's use waits for the next write; a write to another job carries none of it
        other = job(second)
        store.cancel(other)
        assert job(second).aws == before_second
        assert meter.job_id == first
        claimed = store.claim(mine, 60)
    stored = job(first).aws
    assert stored == claimed.aws
    added = {name: stored.get(name, 0) - before_first.get(name, 0) for name in ledger.COUNTERS}
    assert added["sqs_requests"] == 2 and added["lambda_requests"] == 1
    # four reads (two of `first`, two of `second`), the failed claim and the cancel; the claim that carried them
    # is counted with the job's next write
    assert added["dynamodb_read_units"] == 4 and added["dynamodb_write_units"] == 2
    assert added["lambda_mb_ms"] > 0 and added["lambda_mb_ms"] % 1024 == 0
