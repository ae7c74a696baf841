"""Lambda's SQS event source mapping, locally: receive batches, invoke the handler, delete only what succeeded.

moto's own SQS-to-Lambda mapping ignores ReportBatchItemFailures, so darkroom drives SQS itself. Messages that fail
stay on the queue: moto's visibility timeout brings them back and its redrive policy moves them to the dead-letter
queue, as in AWS. Concurrency is the event's ScalingConfig.MaximumConcurrency.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from typing import Any

import boto3

from darkroom_local.lambdas import LocalFunction
from darkroom_local.trail import Trail

log = logging.getLogger("darkroom.local")


def sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": queue_arn.split(":")[3],
    }


class QueuePoller:
    def __init__(
        self,
        function: LocalFunction,
        event: dict[str, Any],
        queue_url: str,
        *,
        wait_s: int = 1,
        duplicate_rate: float = 0.0,
        trail: Trail | None = None,
    ) -> None:
        self.function = function
        self.queue_arn = event["Queue"]
        self.queue_url = queue_url
        self.batch_size = int(event.get("BatchSize", 10))
        self.concurrency = int(event.get("ScalingConfig", {}).get("MaximumConcurrency", 2))
        self.wait_s = wait_s
        self.duplicate_rate = duplicate_rate
        self.trail = trail
        self.duplicates_sent = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.invocations = 0
        self.errors = 0

    def start(self) -> None:
        sqs = boto3.client("sqs")
        for i in range(self.concurrency):
            thread = threading.Thread(
                target=self._loop, args=(sqs,), daemon=True, name=f"poller-{self.queue_arn.rsplit(':', 1)[-1]}-{i}"
            )
            thread.start()
            self._threads.append(thread)

    def request_stop(self) -> None:
        """Receive no more; invocations under way finish on their own."""
        self._stop.set()

    def join(self, deadline: float) -> None:
        """Wait for the poller threads until `deadline` (time.monotonic()); they are daemons, so none holds up exit."""
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _loop(self, sqs: Any) -> None:
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=self.batch_size,
                    WaitTimeSeconds=self.wait_s,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("receive failed on %s", self.queue_arn)
                self._stop.wait(1)
                continue
            if messages:
                self._duplicate(sqs, messages)
                self._deliver(sqs, messages)

    def _duplicate(self, sqs: Any, messages: list[dict[str, Any]]) -> None:
        """Send some messages again, a little later: the duplicates SQS's at-least-once delivery allows."""
        for message in messages:
            if self.duplicate_rate and random.random() < self.duplicate_rate:
                sqs.send_message(
                    QueueUrl=self.queue_url, MessageBody=message["Body"], DelaySeconds=random.randint(0, 3)
                )
                self.duplicates_sent += 1

    def _deliver(self, sqs: Any, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [sqs_record(m, self.queue_arn) for m in messages]}
        self.invocations += 1
        try:
            result = self.function.invoke(event) or {}
        except Exception:
            # A crashed invocation: like Lambda, delete nothing and let visibility bring the batch back.
            self.errors += 1
            log.exception("%s failed on a batch of %d", self.function.spec.logical_id, len(messages))
            self._record(messages, set(), crashed=True)
            return
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        self._record(messages, failed)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )

    def _record(self, messages: list[dict[str, Any]], failed: set[str], *, crashed: bool = False) -> None:
        if self.trail is None:
            return
        queue = self.queue_arn.rsplit(":", 1)[-1]
        for message in messages:
            outcome = "crashed" if crashed else "failed" if message["MessageId"] in failed else "done"
            receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
            self.trail.delivery(queue, message["Body"], receives, outcome)
