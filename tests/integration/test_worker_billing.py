"""The worker's billing rules against moto's server and the emulator: a call that may have generated is never
repeated unless the operator opted in, and a billed answer is never lost to a bug after it arrived."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from darkroom import images, pricing, storage
from darkroom.images import ImageInfo
from darkroom.jobs.store import JobStore
from darkroom.observability import logger
from darkroom_local.stack import LocalStack
from tests.pipeline import deliver, faults, generations, job, manifest, queue_url, receive, submit

pytestmark = pytest.mark.usefixtures("calm_provider")


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record darkroom's logger emits during the test."""
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Collect(level=logging.DEBUG)
    target = logging.getLogger(logger.name)
    target.addHandler(handler)
    yield seen
    target.removeHandler(handler)


def test_a_call_that_timed_out_after_sending_fails_the_job_and_is_never_repeated(
    stack: LocalStack, settings_env: Any
) -> None:
    # Given a provider slower than the call's timeout: it renders, and bills, after darkroom stopped listening
    settings_env(PROVIDER_TIMEOUT_S="1")
    stack.emulator.config.latency_ms = 1600  # type: ignore[union-attr]
    job_id = submit(stack, prompt="slow render")
    # When the worker handles the job's message
    assert deliver(stack, receive(stack)) == {"batchItemFailures": []}
    time.sleep(1)  # let the emulator finish the render it was asked for
    # Then the job failed as a timeout after one call, with no retry queued, though the provider did generate
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "provider_timeout"
    assert "not repeated" in failed.error["message"]
    assert failed.provider_calls == 1 and receive(stack, wait_s=2) == []
    assert generations(stack, job_id) == 1
    assert manifest(stack, failed)["error"]["code"] == "provider_timeout"


def test_a_hung_provider_fails_the_job_without_a_second_call(stack: LocalStack, settings_env: Any) -> None:
    settings_env(PROVIDER_TIMEOUT_S="1")
    faults(stack, "hang")
    job_id = submit(stack)
    deliver(stack, receive(stack))
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "provider_timeout"
    assert failed.provider_calls == 1 and receive(stack, wait_s=2) == []


def test_operators_may_opt_in_to_retrying_ambiguous_calls(stack: LocalStack, settings_env: Any) -> None:
    # Given an operator who accepts double billing over failed jobs
    settings_env(PROVIDER_TIMEOUT_S="1", RETRY_AMBIGUOUS_PROVIDER_CALLS="true")
    faults(stack, "hang")
    job_id = submit(stack)
    # When the first call hangs
    deliver(stack, receive(stack))
    # Then the job is queued again and its retry runs
    waiting = job(job_id)
    assert waiting.status == "queued" and waiting.transient_failures == 1
    stack.emulator.config.fault_rate = 0.0  # type: ignore[union-attr]
    deliver(stack, receive(stack, wait_s=5))
    assert job(job_id).status == "succeeded" and job(job_id).provider_calls == 2


def test_a_pricing_bug_after_the_answer_still_stores_the_images_and_ends_the_job(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given pricing that breaks on this answer
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("pricing bug")

    monkeypatch.setattr(pricing, "cost_usd", broken)
    job_id = submit(stack, n=2)
    # When the provider answers
    assert deliver(stack, receive(stack)) == {"batchItemFailures": []}
    # Then both images are stored and the job succeeded, with its usage kept and no cost
    done = job(job_id)
    assert done.status == "succeeded" and len(done.outputs) == 2 and done.usage and done.cost_usd is None
    assert generations(stack, job_id) == 1 and manifest(stack, done)["status"] == "succeeded"


def test_an_unexpected_bug_after_the_answer_ends_the_job_at_once(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(data: bytes) -> ImageInfo:
        raise RuntimeError("inspection bug")

    monkeypatch.setattr(images, "inspect", broken)
    job_id = submit(stack)
    assert deliver(stack, receive(stack)) == {"batchItemFailures": []}
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "internal_error"
    assert "RuntimeError" not in failed.error["message"] and generations(stack, job_id) == 1
    assert manifest(stack, failed)["status"] == "failed" and receive(stack, wait_s=1) == []


def test_recovery_finds_outputs_stored_in_another_format_than_asked(stack: LocalStack) -> None:
    # Given a webp job whose gateway answered PNG, stored as 0.png before its worker died
    job_id = submit(stack, output_format="webp")
    messages = receive(stack)
    store = JobStore()
    running = store.advance(store.claim(job(job_id), lease_s=-1), phase="storing", usage={"output_tokens": 10})
    png = images_png(64, 48)
    storage.put_output(running, 0, png, ImageInfo("png", 64, 48))
    # When its message comes back after the lease ran out
    assert deliver(stack, messages) == {"batchItemFailures": []}
    # Then the job is finished from the PNG it had, without another call
    done = job(job_id)
    assert done.status == "succeeded" and generations(stack, job_id) == 0
    assert [(o["format"], o["width"], o["height"]) for o in done.outputs] == [("png", 64, 48)]
    assert done.outputs[0]["key"].endswith("/0.png") and done.cost_usd is not None


def test_an_unexpected_worker_error_is_logged_with_its_job(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, records: list[logging.LogRecord]
) -> None:
    # Given S3 refusing the manifest of a finished job
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "PutObject")

    job_id = submit(stack, prompt="[refuse] it")
    monkeypatch.setattr(storage, "write_manifest", refuse)
    # When the worker fails on it
    messages = receive(stack)
    result = deliver(stack, messages)
    # Then the record fails, and an error naming the job reaches the log
    assert result == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    errors = [r for r in records if r.levelno >= logging.ERROR and getattr(r, "job_id", None) == job_id]
    assert errors and errors[0].exc_info is not None
    boto3.client("sqs").delete_message(QueueUrl=queue_url(stack), ReceiptHandle=messages[0]["ReceiptHandle"])


def images_png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()
