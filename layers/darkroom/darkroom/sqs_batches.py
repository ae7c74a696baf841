"""An SQS batch handled a record at a time, answered as Lambda's ReportBatchItemFailures takes it.

The ids of the records that raised are returned; Lambda deletes the others and makes the failed ones visible again.
A batch whose every record failed is answered with the list too, not raised: with one job per batch (the worker's
default) that is the common case, and an expected outcome (a busy or retried job), not a crash. Written here rather
than taken from powertools' batch utilities, which cost the worker, notify and uploads functions some 60 ms of
imports at every cold start for these few lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from darkroom.observability import logger

# A record's body and the ARN of the queue it came from (the worker tells its dead-letter queue apart by it).
RecordHandler = Callable[[str, str], None]


def partial_batch_response(event: dict[str, Any], handle: RecordHandler) -> dict[str, Any]:
    failures = []
    for record in event.get("Records") or []:
        try:
            handle(str(record["body"]), str(record.get("eventSourceARN") or ""))
        except Exception:
            logger.debug("record failed", exc_info=True, extra={"message_id": record.get("messageId")})
            failures.append({"itemIdentifier": record.get("messageId", "")})
    return {"batchItemFailures": failures}
