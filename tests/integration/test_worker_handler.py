"""The worker function against moto's server and the emulator: each provider outcome, duplicates and crashes."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import boto3
import pytest
from PIL import Image

from darkroom.jobs.store import JobStore
from darkroom_local.pollers import sqs_record
from darkroom_local.stack import LocalStack
from tests.pipeline import deliver, faults, generations, job, manifest, queue_url, receive, submit
from tests.support import drain, http_event, load_event

pytestmark = pytest.mark.usefixtures("calm_provider")


def test_job_succeeds_with_real_images_usage_cost_and_manifest(stack: LocalStack) -> None:
    # Given a queued two-image webp job
    job_id = submit(stack, size="1536x1024", output_format="webp", n=2)
    # When the worker handles its message
    result = deliver(stack, receive(stack))
    # Then it succeeded once, with both images stored as real 1536x1024 WebPs
    assert result == {"batchItemFailures": []}
    done = job(job_id)
    assert done.status == "succeeded" and generations(stack, job_id) == 1
    assert done.usage and done.usage["output_tokens"] > 0 and done.cost_usd and done.cost_usd > 0
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    for index, output in enumerate(done.outputs):
        assert output["key"] == f"outputs/dev/{job_id}/{index}.webp"
        stored = boto3.client("s3").get_object(Bucket=bucket, Key=output["key"])
        assert stored["ContentType"] == "image/webp"
        image = Image.open(io.BytesIO(stored["Body"].read()))
        assert (image.format, image.size) == ("WEBP", (1536, 1024))
    assert manifest(stack, done)["status"] == "succeeded"
    # The manifest agrees with the job to the millisecond: confirming it changed nothing a client sees
    assert manifest(stack, done)["updated_at"] == done.updated_at and done.sweep_at is None


def test_sample_worker_event_shape_is_accepted(stack: LocalStack) -> None:
    job_id = submit(stack)
    drain(queue_url(stack))
    event = load_event("worker_jobs_queue")
    event["Records"][0]["body"] = json.dumps({"job_id": job_id, "tenant": "dev"})
    event["Records"][0]["eventSourceARN"] = stack.template.attributes["JobsQueue"]["Arn"]
    assert stack.functions["WorkerFunction"].invoke(event) == {"batchItemFailures": []}
    assert job(job_id).status == "succeeded"


def test_duplicate_delivery_after_success_does_nothing(stack: LocalStack) -> None:
    job_id = submit(stack)
    messages = receive(stack)
    deliver(stack, messages)
    # The same message again (SQS delivers at least once)
    assert deliver(stack, messages) == {"batchItemFailures": []}
    assert generations(stack, job_id) == 1 and job(job_id).status == "succeeded"


def test_delivery_while_another_worker_holds_the_lease_is_left_for_later(stack: LocalStack) -> None:
    job_id = submit(stack)
    messages = receive(stack)
    JobStore().claim(job(job_id), lease_s=60)
    result = deliver(stack, messages)
    assert result == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    assert generations(stack, job_id) == 0
    boto3.client("sqs").delete_message(QueueUrl=queue_url(stack), ReceiptHandle=messages[0]["ReceiptHandle"])


def test_refusal_fails_at_once_with_its_code(stack: LocalStack) -> None:
    job_id = submit(stack, prompt="[refuse] something")
    deliver(stack, receive(stack))
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "moderation_blocked"
    assert failed.provider_calls == 1 and receive(stack) == []
    assert manifest(stack, failed)["error"]["code"] == "moderation_blocked"


def test_rate_limit_requeues_with_the_retry_after_delay(stack: LocalStack) -> None:
    faults(stack, "rate_limit")
    job_id = submit(stack)
    deliver(stack, receive(stack))
    waiting = job(job_id)
    assert waiting.status == "queued" and waiting.rate_limits == 1 and waiting.next_attempt_at
    assert receive(stack) == []  # delayed by retry-after (1 s in the emulator), not visible yet
    stack.emulator.config.fault_rate = 0.0  # type: ignore[union-attr]
    deliver(stack, receive(stack, wait_s=5))
    assert job(job_id).status == "succeeded" and generations(stack, job_id) == 1


def test_server_errors_retry_a_bounded_number_of_times_then_fail(stack: LocalStack) -> None:
    faults(stack, "server_error")
    job_id = submit(stack)
    for _ in range(3):  # ProviderMaxAttempts
        messages = receive(stack, wait_s=10)
        assert len(messages) == 1
        deliver(stack, messages)
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "provider_unavailable"
    assert failed.provider_calls == 3 and generations(stack, job_id) == 0
    assert receive(stack, wait_s=2) == []


def test_crash_during_the_provider_call_fails_without_calling_again(stack: LocalStack) -> None:
    job_id = submit(stack)
    messages = receive(stack)
    # A worker claimed the job for its provider call and died; its lease has run out
    JobStore().claim(job(job_id), lease_s=-1)
    deliver(stack, messages)
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "interrupted"
    assert generations(stack, job_id) == 0
    assert manifest(stack, failed)["status"] == "failed"


def test_crash_after_all_outputs_were_stored_finishes_from_s3(stack: LocalStack) -> None:
    # Given a job whose worker stored its outputs, then died before marking it succeeded
    job_id = submit(stack, n=2)
    messages = receive(stack)
    deliver(stack, messages)
    done = job(job_id)
    store = JobStore()
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    boto3.client("s3").delete_object(Bucket=bucket, Key=f"outputs/dev/{job_id}/result.json")
    # Rewind the record to "storing" under an expired lease
    db = boto3.client("dynamodb")
    db.update_item(
        TableName=store.table,
        Key={"id": {"S": job_id}},
        UpdateExpression="SET #s = :r, phase = :p, lease_id = :l, lease_until = :t, tenant_status = :ts REMOVE outputs",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":r": {"S": "running"},
            ":p": {"S": "storing"},
            ":l": {"S": "gone"},
            ":t": {"N": str(time.time() - 1)},
            ":ts": {"S": "dev#running"},
        },
    )
    # When the message comes back
    deliver(stack, messages)
    # Then it is finished from what S3 holds, without another provider call
    recovered = job(job_id)
    assert recovered.status == "succeeded" and generations(stack, job_id) == 1
    assert [o["key"] for o in recovered.outputs] == [o["key"] for o in done.outputs]
    assert recovered.outputs[0]["width"] == 1024
    assert manifest(stack, recovered)["status"] == "succeeded"


def test_dead_lettered_job_fails_and_gets_its_manifest(stack: LocalStack) -> None:
    job_id = submit(stack)
    # Given its message as the dead-letter queue would hand it over
    message = receive(stack)[0]
    boto3.client("sqs").delete_message(QueueUrl=queue_url(stack), ReceiptHandle=message["ReceiptHandle"])
    arn = stack.template.attributes["JobsDeadLetterQueue"]["Arn"]
    result = stack.functions["WorkerFunction"].invoke({"Records": [sqs_record(message, arn)]})
    assert result == {"batchItemFailures": []}
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "worker_failed"
    assert manifest(stack, failed)["status"] == "failed"


def test_canceled_job_message_is_dropped(stack: LocalStack) -> None:
    job_id = submit(stack)
    messages = receive(stack)
    stack.functions["ApiFunction"].invoke(http_event("DELETE", f"/v1/jobs/{job_id}", api_key=stack.api_keys["dev"]))
    assert deliver(stack, messages) == {"batchItemFailures": []}
    assert job(job_id).status == "canceled" and generations(stack, job_id) == 0


def test_one_bad_record_fails_alone(stack: LocalStack) -> None:
    job_id = submit(stack)
    good = receive(stack)[0]
    bad = {**good, "MessageId": "bad-1", "Body": "not json"}
    result = deliver(stack, [good, bad])
    assert result == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}
    assert job(job_id).status == "succeeded"


def test_unreadable_dead_letter_is_dropped_not_retried_forever(stack: LocalStack) -> None:
    arn = stack.template.attributes["JobsDeadLetterQueue"]["Arn"]
    message = {"MessageId": "m-1", "ReceiptHandle": "r", "Body": '["not", "a", "job"]'}
    assert stack.functions["WorkerFunction"].invoke({"Records": [sqs_record(message, arn)]}) == {
        "batchItemFailures": []
    }


def test_message_superseded_by_a_retry_waits_and_never_calls(stack: LocalStack) -> None:
    # Given a job that failed once and was requeued (its new message says attempt 1)
    faults(stack, "server_error")
    job_id = submit(stack)
    original = receive(stack)
    deliver(stack, original)
    assert job(job_id).status == "queued" and job(job_id).provider_calls == 1
    stack.emulator.config.fault_rate = 0.0  # type: ignore[union-attr]
    # When a duplicate of the first message (attempt 0) turns up
    duplicate = {**original[0], "MessageId": "dup-1"}
    assert deliver_without_delete(stack, [duplicate]) == {"batchItemFailures": [{"itemIdentifier": "dup-1"}]}
    # Then it is left for later: no call, the job still waits for its retry message
    assert job(job_id).status == "queued" and job(job_id).provider_calls == 1
    deliver(stack, receive(stack, wait_s=5))
    assert job(job_id).status == "succeeded" and generations(stack, job_id) == 1


def test_stale_claim_loses_to_the_call_count(stack: LocalStack) -> None:
    # Given a worker that read the job before another worker tried it once and requeued it
    job_id = submit(stack)
    stale = job(job_id)
    store = JobStore()
    store.requeue(store.claim(stale, lease_s=60), next_attempt_at="2026-01-01T00:00:00Z", transient_failures=1)
    # When the stale worker claims from its old read / Then the claim fails: the count moved on
    with pytest.raises(Exception, match="no longer in the state"):
        store.claim(stale, lease_s=60)
    assert job(job_id).provider_calls == 1


class _RetriedWrites:
    """A DynamoDB client whose chosen writes land twice, as when boto retries a request whose answer was lost."""

    def __init__(self, client: Any, calls: set[int]) -> None:
        self._client, self._calls, self._count = client, calls, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **kwargs: Any) -> Any:
        self._count += 1
        if self._count in self._calls:
            self._client.update_item(**kwargs)  # landed, answer lost...
        return self._client.update_item(**kwargs)  # ...and sent again


@pytest.mark.parametrize("retried", [{1}, {2}, {3}, {1, 2, 3}], ids=["claim", "storing", "finish", "all"])
def test_a_write_retried_after_a_lost_answer_is_not_a_conflict(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, retried: set[int]
) -> None:
    job_id = submit(stack, n=1)
    real_init = JobStore.__init__

    def init(self: JobStore, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        self.db = _RetriedWrites(self.db, retried)

    monkeypatch.setattr(JobStore, "__init__", init)
    assert deliver(stack, receive(stack)) == {"batchItemFailures": []}
    monkeypatch.undo()
    done = job(job_id)
    assert done.status == "succeeded" and generations(stack, job_id) == 1
    assert manifest(stack, done)["status"] == "succeeded"


def test_too_little_time_left_leaves_the_job_queued(stack: LocalStack) -> None:
    job_id = submit(stack)
    message = receive(stack)[0]
    arn = stack.template.attributes["JobsQueue"]["Arn"]

    class NearlyOut:
        def get_remaining_time_in_millis(self) -> int:
            return 3000  # less than the 5 s provider timeout

        function_name, memory_limit_in_mb, aws_request_id = "worker", 1024, "r"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:worker"

    result = stack.functions["WorkerFunction"].handler({"Records": [sqs_record(message, arn)]}, NearlyOut())
    assert result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    assert job(job_id).status == "queued" and generations(stack, job_id) == 0
    boto3.client("sqs").delete_message(QueueUrl=queue_url(stack), ReceiptHandle=message["ReceiptHandle"])


def deliver_without_delete(stack: LocalStack, messages: list[dict[str, Any]]) -> dict[str, Any]:
    arn = stack.template.attributes["JobsQueue"]["Arn"]
    return dict(stack.functions["WorkerFunction"].invoke({"Records": [sqs_record(m, arn) for m in messages]}))


def test_retry_whose_message_was_never_sent_is_started_by_the_old_message(stack: LocalStack) -> None:
    # Given a worker that requeued the job, then died before sending the retry's message
    job_id = submit(stack)
    original = receive(stack)
    store = JobStore()
    store.requeue(store.claim(job(job_id), lease_s=60), next_attempt_at="2026-01-01T00:00:00Z", rate_limits=1)
    # When the original message comes back long after the retry was due
    result = deliver(stack, original)
    # Then it starts the job at its current count rather than being dropped as stale
    assert result == {"batchItemFailures": []}
    done = job(job_id)
    assert done.status == "succeeded" and done.provider_calls == 2 and generations(stack, job_id) == 1


def test_an_old_message_recovers_a_job_whose_owner_died(stack: LocalStack) -> None:
    # Given a job retried once (count 1), started again by its old message (count 2), whose worker then died
    job_id = submit(stack)
    original = receive(stack)
    store = JobStore()
    requeued = store.requeue(store.claim(job(job_id), lease_s=60), next_attempt_at="2026-01-01T00:00:00Z")
    store.claim(requeued, lease_s=-1)
    assert job(job_id).provider_calls == 2
    # When the old message (count 0) comes back / Then it recovers the job rather than being dropped
    assert deliver(stack, original) == {"batchItemFailures": []}
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "interrupted"
    assert manifest(stack, failed)["status"] == "failed"
