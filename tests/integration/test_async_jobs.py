"""Jobs on an asynchronous provider (WaveSpeed, emulated): submitted once by the worker, then followed by the real
poller state machine on moto's executor, whose Lambda tasks run darkroom's poller function in-process.

Every test counts submissions from the emulator's side: a submission is what the provider bills.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest

from darkroom import aws
from darkroom.api import openapi
from darkroom.jobs import executions, polling
from darkroom.jobs.store import JobStore
from darkroom_local.stack import LocalStack
from tests.pipeline import (
    deliver,
    execution,
    faults,
    job,
    manifest,
    queue_url,
    receive,
    submissions,
    submit,
    transitions,
)
from tests.support import drain, http_event, load_event, response_json

RENDER_S = 1.0


@pytest.fixture(autouse=True)
def calm(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    emulator = stack.emulator
    assert emulator is not None
    emulator.config.fault_rate = 0.0
    emulator.wavespeed.processing_s = RENDER_S
    drain(queue_url(stack))
    yield
    emulator.config.fault_rate = 0.0
    emulator.wavespeed.processing_s = RENDER_S
    monkeypatch.undo()
    aws.reset()


def start_async_job(stack: LocalStack, prompt: str, **body: Any) -> str:
    """Accepted by the api on the wavespeed route, then submitted by the worker: the job is polling."""
    job_id = submit(stack, prompt=prompt, provider="wavespeed", **body)
    (message,) = receive(stack)
    assert deliver(stack, [message])["batchItemFailures"] == []
    return job_id


def settings_for_this_test(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    aws.reset()


def test_an_async_job_is_submitted_once_polled_and_stored(stack: LocalStack) -> None:
    # Given a job on the wavespeed route
    job_id = submit(stack, prompt="a lighthouse", provider="wavespeed", size="1536x1024", quality="low")
    (message,) = receive(stack)
    # When the worker takes it
    deliver(stack, [message])
    # Then it is polling, with the provider's id and status, and one submission was made
    polling_job = job(job_id)
    assert polling_job.status == "polling" and polling_job.route == "wavespeed"
    assert polling_job.prediction_id and polling_job.provider_status in ("created", "processing")
    assert submissions(stack, "a lighthouse") == 1
    # And its execution ends it: succeeded, a real 1536x1024 PNG stored, the manifest written, the price recorded
    history = execution(stack, job_id)
    assert history["status"] == "SUCCEEDED"
    done = job(job_id)
    assert done.status == "succeeded" and done.provider_status == "completed"
    (output,) = done.outputs
    assert (output["format"], output["width"], output["height"]) == ("png", 1536, 1024)
    assert manifest(stack, done)["status"] == "succeeded"
    assert str(done.cost_usd) == "0.06"
    # And the loop was short: wait, poll, choice, then at most a few more rounds
    states = transitions(history)
    assert states[:3] == ["WaitForProvider", "PollProvider", "ProviderDone"] and states[-1] == "Done"
    assert len(states) <= 12
    assert submissions(stack, "a lighthouse") == 1


def test_get_shows_polling_and_the_providers_status(stack: LocalStack) -> None:
    assert stack.emulator is not None
    stack.emulator.wavespeed.processing_s = 30
    job_id = start_async_job(stack, "a slow lighthouse")
    event = http_event("GET", f"/v1/jobs/{job_id}", api_key=stack.api_keys["dev"])
    event["pathParameters"] = {"id": job_id}
    document = response_json(stack.functions["ApiFunction"].invoke(event))
    openapi.Job.model_validate(document)  # what the published OpenAPI document promises clients
    assert document["status"] == "polling"
    assert document["provider"]["route"] == "wavespeed"
    assert document["provider"]["status"] in ("created", "processing") and document["provider"]["job_id"]
    cancel(stack, job_id)


def test_a_refused_prediction_fails_as_moderation_blocked(stack: LocalStack) -> None:
    job_id = start_async_job(stack, "[refuse] a lighthouse")
    assert execution(stack, job_id)["status"] == "SUCCEEDED"
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "moderation_blocked"
    assert manifest(stack, failed)["error"]["code"] == "moderation_blocked"


def test_polls_that_keep_failing_end_the_job_after_the_tolerated_number(stack: LocalStack) -> None:
    job_id = start_async_job(stack, "a lighthouse in the fog")
    faults(stack, "server_error")  # every poll from now on answers 500
    assert execution(stack, job_id)["status"] == "SUCCEEDED"
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "provider_unavailable"
    assert "3 polls in a row" in failed.error["message"]  # PollFailuresTolerated=2, so the third ends it
    assert submissions(stack, "a lighthouse in the fog") == 1


def test_a_few_failed_polls_in_a_row_are_tolerated(stack: LocalStack) -> None:
    assert stack.emulator is not None
    stack.emulator.wavespeed.processing_s = 30
    job_id = start_async_job(stack, "a patient lighthouse")
    cancel_execution_but_keep_the_job(job_id)
    faults(stack, "server_error")
    # Two failures in a row (the tolerated number) leave the job polling; a success resets the count
    state = polling.poll_once(job_id, polls=1, failed_polls=1)
    assert state["done"] is False and state["failed_polls"] == 2 and job(job_id).status == "polling"
    stack.emulator.config.fault_rate = 0.0
    state = polling.poll_once(job_id, polls=2, failed_polls=2)
    assert state["done"] is False and state["failed_polls"] == 0
    cancel(stack, job_id)


def test_a_job_past_its_polling_deadline_fails_as_provider_timeout(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.emulator is not None
    stack.emulator.wavespeed.processing_s = 60
    settings_for_this_test(monkeypatch, POLL_TIMEOUT_S="2")
    job_id = start_async_job(stack, "a lighthouse that never finishes")
    assert execution(stack, job_id)["status"] == "SUCCEEDED"
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "provider_timeout"
    assert submissions(stack, "a lighthouse that never finishes") == 1


def test_when_polling_itself_keeps_crashing_the_catch_path_fails_the_job(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def crash(job_id: str, polls: int, failed_polls: int) -> dict[str, Any]:
        calls.append(job_id)
        raise RuntimeError("darkroom's own bug")

    monkeypatch.setattr(polling, "poll_once", crash)
    job_id = start_async_job(stack, "a lighthouse the poller cannot follow")
    history = execution(stack, job_id)
    # Retried twice by the machine, then caught: the job is failed, the execution says so
    assert history["status"] == "FAILED"
    assert len(calls) == 3
    assert transitions(history)[-2:] == ["GiveUp", "PollingFailed"]
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "poller_failed"
    assert "may still have charged" in failed.error["message"]
    assert manifest(stack, failed)["status"] == "failed"


def test_canceling_a_polling_job_stops_its_execution(stack: LocalStack) -> None:
    assert stack.emulator is not None
    stack.emulator.wavespeed.processing_s = 30
    job_id = start_async_job(stack, "a lighthouse nobody wants")
    response = cancel(stack, job_id)
    assert response["statusCode"] == 200
    canceled = response_json(response)
    assert canceled["status"] == "canceled" and "may still charge" in canceled["error"]["message"]
    assert execution(stack, job_id)["status"] == "ABORTED"
    assert manifest(stack, job(job_id))["status"] == "canceled"
    # A poll that was already on its way finds the job canceled and changes nothing
    assert polling.poll_once(job_id, polls=1, failed_polls=0)["done"] is True
    assert job(job_id).status == "canceled"


def test_a_redelivered_message_never_submits_again(stack: LocalStack) -> None:
    job_id = submit(stack, prompt="a lighthouse twice", provider="wavespeed")
    (message,) = receive(stack)
    deliver(stack, [message])
    assert job(job_id).status == "polling"
    # When the same message arrives again (SQS delivers at least once)
    boto3.client("sqs").send_message(QueueUrl=queue_url(stack), MessageBody=message["Body"])
    (again,) = receive(stack)
    assert deliver(stack, [again])["batchItemFailures"] == []
    # Then nothing was submitted a second time, and one execution ends the job
    assert execution(stack, job_id)["status"] == "SUCCEEDED"
    assert job(job_id).status == "succeeded"
    assert submissions(stack, "a lighthouse twice") == 1


def test_a_submission_whose_answer_was_lost_fails_interrupted_and_is_not_repeated(stack: LocalStack) -> None:
    # The emulator takes (and bills) the submission, then answers after the worker's 5 s timeout
    faults(stack, "slow")
    job_id = submit(stack, prompt="a lighthouse lost in transit", provider="wavespeed")
    (message,) = receive(stack)
    deliver(stack, [message])
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "interrupted"
    assert "not repeated" in failed.error["message"]
    assert failed.provider_calls == 1
    assert submissions(stack, "a lighthouse lost in transit") == 1


def test_a_submission_refused_with_a_quick_500_is_tried_again(stack: LocalStack) -> None:
    faults(stack, "server_error")
    job_id = submit(stack, prompt="a lighthouse on the second try", provider="wavespeed")
    (message,) = receive(stack)
    deliver(stack, [message])
    assert job(job_id).status == "queued" and submissions(stack, "a lighthouse on the second try") == 0
    assert stack.emulator is not None
    stack.emulator.config.fault_rate = 0.0
    (retry,) = receive(stack, wait_s=5)
    deliver(stack, [retry])
    assert execution(stack, job_id)["status"] == "SUCCEEDED"
    assert job(job_id).status == "succeeded"
    assert submissions(stack, "a lighthouse on the second try") == 1


def test_the_sweeper_starts_the_poller_of_a_job_whose_worker_died_before_starting_it(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a submitted job whose execution was never started (the worker died right after recording the prediction)
    with monkeypatch.context() as dying:
        dying.setattr(executions, "start", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("worker killed")))
        job_id = submit(stack, prompt="a lighthouse left behind", provider="wavespeed")
        (message,) = receive(stack)
        assert deliver(stack, [message])["batchItemFailures"]  # the message will come back
    drain(queue_url(stack))  # ... but say it was lost too
    assert job(job_id).status == "polling" and executions.status(job_id) is None
    # When the sweeper runs (no grace)
    settings_for_this_test(monkeypatch, SWEEP_GRACE_S="0")
    report = stack.functions["SweeperFunction"].invoke(load_event("sweeper_schedule"))
    # Then it started the execution, which ends the job once
    assert job_id in report["pollers"]
    assert execution(stack, job_id)["status"] == "SUCCEEDED"
    assert job(job_id).status == "succeeded"
    assert submissions(stack, "a lighthouse left behind") == 1


def test_a_polling_job_whose_execution_was_aborted_is_finished_by_the_sweepers_last_poll(stack: LocalStack) -> None:
    job_id = start_async_job(stack, "a lighthouse abandoned")
    cancel_execution_but_keep_the_job(job_id)
    # The provider finishes meanwhile; the sweeper's check finds the execution ended and the job still polling
    time.sleep(RENDER_S + 0.5)
    assert polling.check_on(JobStore(), job(job_id)) == "ended"
    done = job(job_id)
    assert done.status == "succeeded" and len(done.outputs) == 1
    assert submissions(stack, "a lighthouse abandoned") == 1


def test_the_sweepers_last_poll_ends_the_job_even_when_its_output_cannot_be_fetched(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a polling job whose execution was aborted, and a provider that finished but links an output darkroom
    # will not fetch (here the emulator's own 127.0.0.1, with the SSRF guard on as in AWS)
    job_id = start_async_job(stack, "a lighthouse behind a dead link")
    cancel_execution_but_keep_the_job(job_id)
    time.sleep(RENDER_S + 0.5)
    settings_for_this_test(monkeypatch, ALLOW_PRIVATE_URLS="false")
    # When the sweeper's last look comes / Then the job ends, failed, with its manifest: nothing will look again
    assert polling.check_on(JobStore(), job(job_id)) == "ended"
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "poller_failed"
    assert "does not fetch" in failed.error["message"]
    assert manifest(stack, failed)["status"] == "failed"


def test_a_cancel_that_read_the_job_queued_still_cancels_it_once_it_is_polling(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.emulator is not None
    stack.emulator.wavespeed.processing_s = 30
    job_id = start_async_job(stack, "a lighthouse canceled mid-submission")
    # The api read the job while it was still queued; the worker submitted it before the cancel's write
    real_get = JobStore.get_for_tenant

    def stale(self: JobStore, wanted: str, tenant: str) -> Any:
        found = real_get(self, wanted, tenant)
        return replace(found, status="queued", prediction_id=None) if found else None

    monkeypatch.setattr(JobStore, "get_for_tenant", stale)
    response = cancel(stack, job_id)
    assert response["statusCode"] == 200, response["body"]
    assert job(job_id).status == "canceled"
    assert execution(stack, job_id)["status"] == "ABORTED"


def cancel(stack: LocalStack, job_id: str) -> dict[str, Any]:
    event = http_event("DELETE", f"/v1/jobs/{job_id}", api_key=stack.api_keys["dev"])
    event["pathParameters"] = {"id": job_id}
    return dict(stack.functions["ApiFunction"].invoke(event))


def cancel_execution_but_keep_the_job(job_id: str) -> None:
    """An operator aborts the execution from the console: the job stays polling with nothing following it."""
    boto3.client("stepfunctions").stop_execution(executionArn=executions.execution_arn(job_id))
    for _ in range(100):
        if executions.status(job_id) != executions.RUNNING:
            return
        time.sleep(0.05)
    raise AssertionError("the execution did not stop")
