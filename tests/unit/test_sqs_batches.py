"""An SQS batch answered as ReportBatchItemFailures takes it: the ids of the records that failed, and only those."""

from __future__ import annotations

from darkroom.sqs_batches import partial_batch_response


def record(message_id: str, body: str) -> dict[str, str]:
    return {"messageId": message_id, "body": body, "eventSourceARN": "arn:aws:sqs:us-east-1:1:jobs"}


def test_the_records_that_raised_are_answered_and_the_others_handled() -> None:
    seen: list[tuple[str, str]] = []

    def handle(body: str, source: str) -> None:
        seen.append((body, source))
        if body == "bad":
            raise ValueError("this record cannot be handled")

    answer = partial_batch_response({"Records": [record("1", "ok"), record("2", "bad"), record("3", "ok")]}, handle)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "2"}]}
    assert [body for body, _ in seen] == ["ok", "bad", "ok"] and seen[0][1] == "arn:aws:sqs:us-east-1:1:jobs"


def test_a_batch_whose_every_record_failed_is_answered_not_raised() -> None:
    def fail(body: str, source: str) -> None:
        raise RuntimeError("busy")

    answer = partial_batch_response({"Records": [record("1", "a")]}, fail)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "1"}]}
    assert partial_batch_response({"Records": []}, fail) == {"batchItemFailures": []}
