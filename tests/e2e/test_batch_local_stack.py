"""The batch tier through the served local stack, over HTTP: ten batch jobs go out in one batch and each succeeds at
half the price of the same job on the standard tier, by the jobs' own cost fields."""

from __future__ import annotations

from collections.abc import Callable

import boto3
import pytest

from tests.e2e.served import api_client, served_stack, wait_for_end
from tests.pipeline import execution, transitions

pytestmark = pytest.mark.e2e


def test_ten_batch_jobs_go_out_in_one_batch_at_half_price(record_property: Callable[[str, str], None]) -> None:
    # Given a stack whose batches take ten jobs, its scheduled functions run every second
    with served_stack(parameters={"BatchMaxJobs": "10", "BatchMaxWaitSeconds": "3600"}, schedule_interval_s=1) as stack:
        batches_function = stack.functions["BatchesFunction"]
        with api_client(stack) as http:
            # When ten batch jobs and one standard job of the same size are submitted
            body = {"model": "gpt-image-2", "size": "1024x1024", "quality": "medium"}
            accepted = []
            for i in range(10):
                answer = http.post(
                    "/v1/images/generations", json={**body, "prompt": f"harbour {i:02}", "tier": "batch"}
                )
                assert answer.status_code == 202, answer.text
                assert answer.json()["status"] == "batch_queued"
                accepted.append(answer.json()["id"])
            standard = http.post("/v1/images/generations", json={**body, "prompt": "harbour 10"}).json()
            invoked_before = batches_function.invoked
            # Then every batch job succeeds, all from one provider batch
            ended = [wait_for_end(http, job_id, timeout_s=60) for job_id in accepted]
            assert {job["status"] for job in ended} == {"succeeded"}, [job["error"] for job in ended]
            assert len({job["provider"]["job_id"] for job in ended}) == 1
            (batch_id,) = {job["provider"]["batch"]["id"] for job in ended}
            assert ended[0]["provider"]["batch"]["request_counts"]["completed"] == 10
            # at half the standard job's price, by their own cost fields
            full = wait_for_end(http, standard["id"])
            assert full["status"] == "succeeded" and full["cost_usd"] > 0
            assert {job["cost_usd"] for job in ended} == {full["cost_usd"] / 2}
        # and the provider billed each job once, through the batch
        calls = stack.emulator.calls()["prompts"]  # type: ignore[union-attr]
        assert [calls[f"harbour {i:02}"]["batched"] for i in range(10)] == [1] * 10
        history = execution(stack, batch_id, machine_name="BatchPollerStateMachine")
        states = transitions(history)
        checks = states.count("CheckBatch")
        invocations = batches_function.invoked - invoked_before
        items = boto3.client("dynamodb").scan(TableName=stack.template.attributes["BatchesTable"]["Ref"])["Count"]
        record_property(
            "summary",
            f"batch of 10 jobs: {len(states)} state transitions, {checks + 1} Lambda invocations of its own (the "
            f"batcher run that sent it, then {checks} checks; {invocations - checks - 1} idle scheduled runs "
            "meanwhile), "
            f"{items} batch record",
        )
