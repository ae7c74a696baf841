"""The sweeper against moto's server: it revives what nothing else would, through the index, and nothing more."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from darkroom import aws, queue, storage
from darkroom.jobs.store import JobStore
from darkroom_local.stack import LocalStack
from tests.pipeline import deliver, generations, job, manifest, queue_url, receive, submit
from tests.support import drain, http_event, load_event, response_json


@pytest.fixture(autouse=True)
def clean(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    assert stack.emulator is not None
    stack.emulator.config.fault_rate = 0.0
    drain(queue_url(stack))
    # No grace: every entry in the index is due at once (production waits a minute).
    monkeypatch.setenv("SWEEP_GRACE_S", "0")
    aws.reset()
    yield
    monkeypatch.undo()
    aws.reset()


def sweep(stack: LocalStack) -> dict[str, Any]:
    return dict(stack.functions["SweeperFunction"].invoke(load_event("sweeper_schedule")))


def lose_the_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """The api dies (or SQS refuses, and the withdrawal fails too) after writing the job, before its message."""

    def lost(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("SQS unreachable")

    monkeypatch.setattr(queue, "send_job", lost)
    monkeypatch.setattr(JobStore, "delete_unstarted", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("down")))


def test_a_job_whose_message_was_lost_is_revived_and_runs_once(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a job recorded as queued whose message was never sent (the client got a 503 saying to check)
    with monkeypatch.context() as lost:
        lose_the_send(lost)
        event = http_event("POST", "/v1/images/generations", api_key=stack.api_keys["dev"], body={"prompt": "lost"})
        response = stack.functions["ApiFunction"].invoke(event)
    assert response["statusCode"] == 503 and "check GET /v1/jobs" in response_json(response)["error"]["message"]
    (stranded,) = [j for j in JobStore().list_for_tenant("dev", status="queued", limit=100)[0] if j.sweep_at]
    assert receive(stack) == []
    # When the sweeper runs
    report = sweep(stack)
    # Then it sent the job's message once, and the job runs to success exactly once
    assert report["resent"] == [stranded.id]
    deliver(stack, receive(stack, wait_s=2))
    done = job(stranded.id)
    assert done.status == "succeeded" and generations(stack, stranded.id) == 1 and done.sweep_at is None
    # And a second sweep finds nothing to do
    assert sweep(stack)["resent"] == [] and receive(stack) == []


def test_a_backlogged_queue_gets_no_extra_messages(stack: LocalStack) -> None:
    # Given jobs whose messages went out but wait behind a backlog (no worker has taken them)
    ids = [submit(stack, prompt=f"backlog {i}") for i in range(3)]
    assert all(job(job_id).sweep_at is None for job_id in ids)
    # When the sweeper runs / Then it leaves them to the queue: one message each, no more
    report = sweep(stack)
    assert not set(report["resent"]) & set(ids)
    assert len(receive(stack)) == 3


def test_a_job_whose_worker_died_mid_call_is_failed_without_a_call(stack: LocalStack) -> None:
    # Given a job claimed by a worker that died during its provider call (its lease has run out)
    job_id = submit(stack)
    drain(queue_url(stack))  # and its message is far away (the visibility timeout is an hour in production)
    JobStore().claim(job(job_id), lease_s=-1)
    # When the sweeper runs
    report = sweep(stack)
    # Then the job ends as interrupted, with its manifest, and the provider was not called again
    assert report["recovered"] == [job_id]
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "interrupted"
    assert generations(stack, job_id) == 0 and manifest(stack, failed)["status"] == "failed"


def test_a_job_running_under_a_live_lease_is_left_alone(stack: LocalStack) -> None:
    job_id = submit(stack)
    JobStore().claim(job(job_id), lease_s=60)
    assert job_id not in sweep(stack)["recovered"]
    assert job(job_id).status == "running"


def test_ended_jobs_leave_the_index(stack: LocalStack) -> None:
    job_id = submit(stack, prompt="[refuse] to end quickly")
    deliver(stack, receive(stack))
    ended = job(job_id)
    assert ended.terminal and ended.sweep_at is None
    item = boto3.client("dynamodb").get_item(TableName=JobStore().table, Key={"id": {"S": job_id}})["Item"]
    assert "sweep_shard" not in item and "sweep_at" not in item


def test_the_index_is_not_scanned(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = JobStore.__init__

    def spy(self: JobStore, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        db = self.db

        class Spy:
            def __getattr__(self, name: str) -> Any:
                calls.append(name)
                return getattr(db, name)

        self.db = Spy()

    monkeypatch.setattr(JobStore, "__init__", spy)
    sweep(stack)
    assert "query" in calls and "scan" not in calls


def s3_down(*args: Any, **kwargs: Any) -> None:
    raise ClientError({"Error": {"Code": "InternalError", "Message": "S3 down"}}, "PutObject")


def test_a_canceled_job_whose_manifest_was_lost_gets_it_from_the_sweeper(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a job with no message, canceled while S3 refused its manifest (the client got a 503)
    job_id = submit(stack)
    drain(queue_url(stack))
    with monkeypatch.context() as outage:
        outage.setattr(storage, "write_manifest", s3_down)
        event = http_event("DELETE", f"/v1/jobs/{job_id}", api_key=stack.api_keys["dev"])
        assert stack.functions["ApiFunction"].invoke(event)["statusCode"] == 503
    canceled = job(job_id)
    assert canceled.status == "canceled" and canceled.sweep_at is not None  # ended, manifest not confirmed
    # When the sweeper runs (no message exists to bring the job back, and the client never retried)
    report = sweep(stack)
    # Then the manifest is written, and the job leaves the index
    assert report["manifests"] == [job_id]
    assert manifest(stack, job(job_id))["status"] == "canceled" and job(job_id).sweep_at is None


def test_a_repeated_cancel_writes_a_manifest_the_first_one_lost(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(stack)
    event = http_event("DELETE", f"/v1/jobs/{job_id}", api_key=stack.api_keys["dev"])
    with monkeypatch.context() as outage:
        outage.setattr(storage, "write_manifest", s3_down)
        stack.functions["ApiFunction"].invoke(event)
    assert stack.functions["ApiFunction"].invoke(event)["statusCode"] == 200
    assert manifest(stack, job(job_id))["status"] == "canceled" and job(job_id).sweep_at is None
