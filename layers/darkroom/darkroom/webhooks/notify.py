"""From a job's result manifest to a signed event at each of its subscribers, once per intent, retried until done.

A manifest's arrival in S3 (its ObjectCreated event, through the completions queue) opens one delivery per target
(and so does a preview's progress document, for the `job.progress` event, as a delivery of its own: the job's id and
`/progress-{k}`):
the job's own `webhook_url` (signed with the tenant's secret) and every enabled endpoint of the tenant whose filter
takes the event (signed with the endpoint's). Opening writes the delivery's record (due now) and queues its first
try on the retry queue, so every try is a message of its own: one slow subscriber never holds up another, and a try
(15 s at most) always fits its invocation.

Every try is claimed by a conditional write on the record's attempt count, as jobs claim provider calls: S3 sending an
event twice, SQS redelivering, and a retry message arriving twice all find the attempt already taken, and every try
of one event carries the same `webhook-id`. Nothing is lost between steps: a record is written before its message is
sent, and says whether the message went out (`retry_queued`); the message that made the try stays on the queue until
then, so if the sender died or SQS refused, it comes back, finds the retry recorded but not queued, and queues it
for when it is due. A message that finds its record long overdue sends it again too; a try whose worker died leaves
a lease that runs out, and the message coming back makes it again.

Tries follow the schedule (darkroom.webhooks.schedule) from the delivery's opening, or from its last redelivery on
purpose, which starts the schedule over while the attempts keep their numbers. An endpoint's tries go to its url as
it is at the time (a PATCH moves retries and redeliveries with it), and only while it still takes the event; its
circuit breaker (darkroom.webhooks.endpoints) postpones them, without using up an attempt, while it is open. A job's
own `webhook_url` has no endpoint record, and no breaker.

Retries wait on the retry queue, with SQS delays chained past its 15-minute cap.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from darkroom import aws, storage
from darkroom.observability import logger, metrics
from darkroom.settings import settings
from darkroom.webhooks import delivery, signing
from darkroom.webhooks.endpoints import PROBE_LEASE_S, Endpoint, WebhookStore
from darkroom.webhooks.events import DEFAULT_EVENTS, PROGRESS_EVENT, event_body, event_type, progress_event_body

JOB_TARGET = "job"
LEASE_S = 60.0  # longer than a try (15 s) and its bookkeeping
# How overdue a waiting try must be before a message that finds it re-sends its (lost) message.
STALE_S = 300.0
MAX_SQS_DELAY_S = 900
DISABLE_AFTER_FAILING_S = 5 * 24 * 3600
MAX_ATTEMPTS_KEPT = 20
# Tries of a `job.progress` event: at once, 5 s and 5 minutes later with the default schedule.
PROGRESS_TRIES = 3
_PROGRESS_FILE = re.compile(r"partial-([0-9])" + re.escape(storage.PROGRESS_SUFFIX))
_PROGRESS_SUBJECT = re.compile(r"(.+)/progress-([0-9])")


@dataclass
class Delivery:
    job_id: str
    target: str
    tenant: str
    event_type: str
    timestamp: str
    message_id: str
    status: str = "sending"
    attempts_made: int = 0
    lease_until: float = 0.0
    due_at: float = 0.0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    schedule_base: int = 0  # attempts made before the last redelivery on purpose: the schedule counts from there
    retry_queued: bool = True  # False from recording a retry until its message is known to be on the queue


def message_id(job_id: str, target: str) -> str:
    """The `webhook-id` of one event to one target: the same on every try and every redelivery."""
    return "msg_" + hashlib.sha256(f"{job_id}:{target}".encode()).hexdigest()[:32]


# Entry points


def handle_completion_record(body: str) -> None:
    """One completions-queue message: an S3 event (or S3's test event, which names no object)."""
    event = json.loads(body)
    for record in event.get("Records", []) if isinstance(event, dict) else []:
        key = unquote_plus(str(record.get("s3", {}).get("object", {}).get("key", "")))
        parts = key.split("/")
        progress = _PROGRESS_FILE.fullmatch(parts[3]) if len(parts) == 4 and parts[0] == "outputs" else None
        if progress:
            notify_progress(parts[1], parts[2], int(progress.group(1)))
        elif len(parts) == 4 and parts[0] == "outputs" and parts[3] == storage.MANIFEST:
            notify_job(parts[1], parts[2])
        else:
            logger.warning("completion event for an unexpected key, dropped", extra={"key": key[:200]})


def notify_job(tenant: str, job_id: str) -> None:
    manifest = storage.read_manifest(tenant, job_id)
    if manifest is None or manifest.get("status") not in ("succeeded", "failed", "canceled"):
        return
    timestamp = manifest.get("completed_at") or datetime.now(UTC).isoformat(timespec="seconds")
    _open_deliveries(tenant, job_id, event_type(manifest["status"]), timestamp, manifest)


def notify_progress(tenant: str, job_id: str, index: int) -> None:
    """A preview was stored: `job.progress` to those who asked for it, as a delivery of its own."""
    document = storage.read_progress(tenant, job_id, index)
    if document is None or document.get("tenant") != tenant or document.get("id") != job_id:
        return
    timestamp = str(document["preview"].get("created_at") or datetime.now(UTC).isoformat(timespec="seconds"))
    _open_deliveries(tenant, f"{job_id}/progress-{index}", PROGRESS_EVENT, timestamp, document)


def _open_deliveries(tenant: str, subject: str, kind: str, timestamp: str, document: dict[str, Any]) -> None:
    """One delivery per target that takes `kind`; `subject` is what the deliveries are of: a job's end (its id) or
    one of its previews."""
    store = DeliveryStore()
    first = delivery.next_delay_s(0, settings().webhook_retry_schedule) or 0.0  # the schedule's first entry
    for target, url in _targets(WebhookStore(), tenant, document, kind):
        opened = Delivery(subject, target, tenant, kind, timestamp, message_id(subject, target))
        record = store.open(opened, url, due_at=time.time() + first)
        if record.status == "retrying" and record.attempts_made == 0:
            # New, or opened by an earlier copy of this event whose message may not have gone out: one more
            # message for the first try is harmless, its claim is conditional.
            _send_due(record, 0)


class DeliveryBusy(Exception):
    """The message's try cannot be judged yet (its record is not written yet, or another worker holds the try):
    the message fails and SQS brings it back."""


def handle_retry_message(body: str) -> None:
    message = json.loads(body)
    wait = float(message.get("not_before", 0)) - time.time()
    if wait > 1:  # chained past SQS's 15-minute cap
        send_retry(message, wait)
        return
    store, hooks = DeliveryStore(), WebhookStore()
    job_id, target, attempt = str(message["job_id"]), str(message["target"]), int(message["attempt"])
    endpoint: Endpoint | None = None
    probing = False
    tenant = str(message.get("tenant") or "")  # messages queued before it was carried have none
    if target != JOB_TARGET and tenant:
        # Before the claim, so a try the breaker holds back keeps its attempt.
        endpoint = _endpoint(hooks, tenant, target)
        until, probing = _breaker(hooks, endpoint)
        if until is not None:
            _postpone(store, message, until)
            return
    tried = False
    try:
        record, url = store.claim(job_id, target, attempt)
        if record is None:
            record, url = _after_lost_claim(store, job_id, target, attempt)
            if record is None:
                return
        manifest = _read_subject(record)
        if manifest is None:
            store.finish(record, "failed", {"error": "the job's manifest is gone (its outputs expired)"})
            return
        if target != JOB_TARGET and (endpoint is None or endpoint.tenant != record.tenant):
            endpoint = _endpoint(hooks, record.tenant, target)
        tried = True
        _try(store, hooks, record, url, manifest, endpoint)
    finally:
        if probing and endpoint is not None and not tried:
            hooks.release_probe(endpoint)  # the probe was not this message's to make: another may take it now


def _breaker(hooks: WebhookStore, endpoint: Endpoint | None) -> tuple[float | None, bool]:
    """Whether a try to the endpoint may go now: (None, probing) if so, else (when to come back, False)."""
    if endpoint is None or not endpoint.enabled or not endpoint.breaker_open():
        return None, False
    assert endpoint.breaker_until is not None
    now = time.time()
    if now < endpoint.breaker_until:
        return endpoint.breaker_until + 1, False  # a second late rather than early, or it is postponed again
    if hooks.take_probe(endpoint):
        return None, True
    # Another worker probes: come back when its outcome is written (a probe lease at most).
    probe_ends = endpoint.probe_until if endpoint.probe_of == endpoint.breaker_until else None
    return min(now + PROBE_LEASE_S, max(now + 1, probe_ends or 0.0)), False


def _postpone(store: DeliveryStore, message: dict[str, Any], until: float) -> None:
    """The message comes back when the endpoint's breaker may let it through; its attempt stays unused."""
    job_id, target, attempt = str(message["job_id"]), str(message["target"]), int(message["attempt"])
    store.postpone(job_id, target, attempt, until)  # due then: the overdue backstop waits for it too
    send_retry({**message, "not_before": until}, until - time.time())
    logger.info(
        "webhook try postponed: the endpoint's circuit breaker is open",
        extra={"job_id": job_id, "target": target, "attempt": attempt, "delay_s": round(until - time.time())},
    )


def _after_lost_claim(store: DeliveryStore, job_id: str, target: str, attempt: int) -> tuple[Delivery | None, str]:
    """The message could not claim its try. It may be a duplicate (nothing to do), early (its record is not written
    yet), the message of a try whose retry never made it to the queue (queue it), or the only message left for a
    delivery whose worker died (take the try over, or queue the next one)."""
    current, url = store.get(job_id, target)
    now = time.time()
    if current is None:
        raise DeliveryBusy(f"delivery {job_id}/{target} is not recorded yet")
    if current.status == "sending" and current.attempts_made == attempt + 1:
        if current.lease_until >= now:
            raise DeliveryBusy(f"delivery {job_id}/{target} is being tried")
        return store.take_over(current), url
    if current.status == "retrying" and current.attempts_made == attempt + 1 and not current.retry_queued:
        # This message made the last try; its retry was recorded, and its sender died or SQS refused before the
        # retry was queued. Queued now, for when it was due: the flag keeps later copies from queueing it again.
        _send_due(current, current.attempts_made)
        store.mark_queued(current)
        return None, ""
    if current.status == "retrying" and current.attempts_made > attempt and current.due_at < now - STALE_S:
        _send_due(current, current.attempts_made)
    return None, ""


# One try


def _targets(hooks: WebhookStore, tenant: str, manifest: dict[str, Any], kind: str) -> list[tuple[str, str]]:
    targets = []
    wanted = manifest.get("webhook_events") or DEFAULT_EVENTS
    if manifest.get("webhook_url") and kind in wanted:
        targets.append((JOB_TARGET, str(manifest["webhook_url"])))
    for endpoint in hooks.list_endpoints(tenant):
        if endpoint.enabled and kind in endpoint.events:
            targets.append((endpoint.id, endpoint.url))
    return targets


def _try(
    store: DeliveryStore,
    hooks: WebhookStore,
    record: Delivery,
    url: str,
    manifest: dict[str, Any],
    endpoint: Endpoint | None,
) -> None:
    s = settings()
    if record.target != JOB_TARGET:
        if endpoint is None or not endpoint.enabled:
            store.finish(record, "failed", {"error": "the endpoint was deleted or disabled"})
            return
        if record.event_type not in endpoint.events:
            store.finish(record, "skipped", {"error": f"the endpoint no longer takes {record.event_type} events"})
            return
        url = endpoint.url  # where the tenant wants its events now, not where it wanted them when the job ended
    secrets = hooks.tenant_secrets(record.tenant) if endpoint is None else hooks.endpoint_secrets(endpoint)
    build = progress_event_body if record.event_type == PROGRESS_EVENT else event_body
    body = build(
        manifest,
        timestamp=record.timestamp,
        api_url=s.api_url,
        presign=storage.presign,
        links_valid_s=s.presign_ttl_s,
    )
    headers = signing.headers(secrets, record.message_id, int(time.time()), body)
    attempt = delivery.send(
        url, body, headers, allow_http=s.allow_http_webhooks, allow_private=s.allow_private_webhooks
    )
    seen = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": attempt.status,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
    }
    log = {"job_id": record.job_id, "target": record.target, "attempt": record.attempts_made, "status": attempt.status}
    if attempt.outcome == "delivered":
        store.finish(record, "delivered", seen, url=url)
        if endpoint is not None:
            # Always: a failure may have been written since the endpoint was read, and a success closes the breaker.
            hooks.mark_endpoint(endpoint, failing=False)
        metrics.add_metric(name="WebhooksDelivered", unit="Count", value=1)
        logger.info("webhook delivered", extra=log)
        return
    if attempt.outcome == "gone":
        store.finish(record, "gone", seen, url=url)
        if endpoint is not None:
            _disable(hooks, endpoint, "the endpoint answered 410 Gone")
        logger.warning("webhook endpoint gone", extra=log)
        return
    if endpoint is not None:
        marked = hooks.mark_endpoint(endpoint, failing=True)  # None: moved to another URL since this try began
        if marked and marked.failing_since and time.time() - marked.failing_since > DISABLE_AFTER_FAILING_S:
            _disable(hooks, marked, "every delivery failed for 5 days")
    tries = record.attempts_made - record.schedule_base
    # A preview is stale within minutes: its event gets the schedule's first tries only.
    schedule = (
        s.webhook_retry_schedule[:PROGRESS_TRIES] if record.event_type == PROGRESS_EVENT else s.webhook_retry_schedule
    )
    delay = delivery.next_delay_s(tries, schedule, attempt.retry_after_s)
    if delay is None:
        store.finish(record, "failed", seen, url=url)
        metrics.add_metric(name="WebhooksFailed", unit="Count", value=1)
        logger.warning("webhook given up", extra=log)
        return
    due = time.time() + delay
    seen["next_attempt_at"] = datetime.fromtimestamp(due, UTC).isoformat(timespec="seconds")
    store.will_retry(record, seen, due_at=due, url=url)  # written first: a lost message is re-sent from the record
    _send_due(record, record.attempts_made)
    store.mark_queued(record)
    logger.info("webhook will be retried", extra={**log, "delay_s": round(delay)})


def _read_subject(record: Delivery) -> dict[str, Any] | None:
    """What a delivery's event is built from: the job's manifest, or one preview's progress document."""
    progress = _PROGRESS_SUBJECT.fullmatch(record.job_id)
    if progress:
        return storage.read_progress(record.tenant, progress.group(1), int(progress.group(2)))
    return storage.read_manifest(record.tenant, record.job_id)


def _disable(hooks: WebhookStore, endpoint: Endpoint, reason: str) -> None:
    if not hooks.disable_endpoint(endpoint, reason):
        return  # deleted, or moved to another URL: the old URL's answer says nothing of the new one
    metrics.add_metric(name="WebhookEndpointsDisabled", unit="Count", value=1)
    logger.warning(
        "webhook endpoint disabled", extra={"tenant": endpoint.tenant, "endpoint_id": endpoint.id, "reason": reason}
    )


def _endpoint(hooks: WebhookStore, tenant: str, endpoint_id: str) -> Endpoint | None:
    try:
        return hooks.get_endpoint(tenant, endpoint_id)
    except Exception as exc:
        if getattr(exc, "status", None) == 404:
            return None
        raise


def _send_due(record: Delivery, attempt: int) -> None:
    """The message for try number attempt+1 of a delivery, due when its record says."""
    message = {"job_id": record.job_id, "target": record.target, "tenant": record.tenant, "attempt": attempt}
    send_retry({**message, "not_before": record.due_at}, record.due_at - time.time())


def send_retry(message: dict[str, Any], delay_s: float) -> None:
    """A retry message due in `delay_s`, carried past SQS's 15-minute cap by being sent on again when it arrives."""
    due = message.get("not_before") or time.time() + delay_s
    aws.client("sqs").send_message(
        QueueUrl=settings().webhook_retry_queue_url,
        MessageBody=json.dumps({**message, "not_before": due}),
        DelaySeconds=max(0, min(MAX_SQS_DELAY_S, round(delay_s))),
    )


class DeliveryStore:
    """Deliveries by job and target; every try claimed by a conditional write on the attempt count."""

    def __init__(self) -> None:
        self.table = settings().deliveries_table
        self.db = aws.client("dynamodb")

    def open(self, record: Delivery, url: str, *, due_at: float) -> Delivery:
        """The delivery's record, written due at `due_at` unless an earlier copy of the event already wrote it."""
        item = {
            "job_id": {"S": record.job_id},
            "target": {"S": record.target},
            "tenant": {"S": record.tenant},
            "url": {"S": url},
            "event_type": {"S": record.event_type},
            "timestamp": {"S": record.timestamp},
            "message_id": {"S": record.message_id},
            "status": {"S": "retrying"},
            "attempts_made": {"N": "0"},
            "lease_until": {"N": "0"},
            "due_at": {"N": str(due_at)},
            "attempts": {"S": "[]"},
        }
        try:
            self.db.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(job_id)")
            record.status, record.attempts_made, record.due_at = "retrying", 0, due_at
            return record
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
        existing, _ = self.get(record.job_id, record.target)
        assert existing is not None
        return existing

    def get(self, job_id: str, target: str) -> tuple[Delivery | None, str]:
        item = self.db.get_item(TableName=self.table, Key=self._key(job_id, target), ConsistentRead=True).get("Item")
        return (_delivery(item), item["url"]["S"]) if item else (None, "")

    def claim(self, job_id: str, target: str, attempt: int) -> tuple[Delivery | None, str]:
        """Try number attempt+1 of a waiting delivery; (None, "") when that try is not this message's to make."""
        try:
            item = self.db.update_item(
                TableName=self.table,
                Key=self._key(job_id, target),
                UpdateExpression="SET #s = :sending, attempts_made = :next, lease_until = :lease",
                ConditionExpression="#s = :retrying AND attempts_made = :made",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":sending": {"S": "sending"},
                    ":retrying": {"S": "retrying"},
                    ":next": {"N": str(attempt + 1)},
                    ":made": {"N": str(attempt)},
                    ":lease": {"N": str(time.time() + LEASE_S)},
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            return None, ""
        return _delivery(item), item["url"]["S"]

    def take_over(self, record: Delivery) -> Delivery | None:
        """A try whose worker died before recording anything: its lease ran out, so the message makes it again."""
        try:
            self.db.update_item(
                TableName=self.table,
                Key=self._key(record.job_id, record.target),
                UpdateExpression="SET lease_until = :lease",
                ConditionExpression="#s = :sending AND attempts_made = :n AND lease_until < :now",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":sending": {"S": "sending"},
                    ":n": {"N": str(record.attempts_made)},
                    ":now": {"N": str(time.time())},
                    ":lease": {"N": str(time.time() + LEASE_S)},
                },
            )
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            return None
        return record

    def will_retry(self, record: Delivery, seen: dict[str, Any], *, due_at: float, url: str) -> None:
        """Retrying, and not yet known to be queued (mark_queued says so once its message is sent)."""
        self._record(record, "retrying", seen, due_at=due_at, url=url, queued=False)

    def finish(self, record: Delivery, status: str, seen: dict[str, Any], *, url: str | None = None) -> None:
        self._record(record, status, seen, due_at=0.0, url=url)

    def _record(
        self,
        record: Delivery,
        status: str,
        seen: dict[str, Any],
        *,
        due_at: float,
        url: str | None,
        queued: bool | None = None,
    ) -> None:
        attempts = [*record.attempts, {"attempt": record.attempts_made, **seen}][-MAX_ATTEMPTS_KEPT:]
        values: dict[str, Any] = {
            ":status": {"S": status},
            ":attempts": {"S": json.dumps(attempts)},
            ":zero": {"N": "0"},
            ":due": {"N": str(due_at)},
            ":sending": {"S": "sending"},
            ":n": {"N": str(record.attempts_made)},
        }
        names = {"#s": "status"}
        sets = "SET #s = :status, attempts = :attempts, lease_until = :zero, due_at = :due"
        if url is not None:  # the url this try went to, as the listing shows it
            sets += ", #url = :url"
            names["#url"], values[":url"] = "url", {"S": url}
        if queued is not None:
            sets += ", retry_queued = :queued"
            values[":queued"] = {"BOOL": queued}
        self.db.update_item(
            TableName=self.table,
            Key=self._key(record.job_id, record.target),
            UpdateExpression=sets,
            ConditionExpression="#s = :sending AND attempts_made = :n",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        record.status, record.attempts, record.due_at = status, attempts, due_at
        if queued is not None:
            record.retry_queued = queued

    def mark_queued(self, record: Delivery) -> None:
        """The retry's message is on the queue; nothing to do if its try was claimed meanwhile."""
        self._if_waiting(record.job_id, record.target, record.attempts_made, "SET retry_queued = :v", {"BOOL": True})

    def postpone(self, job_id: str, target: str, attempt: int, until: float) -> None:
        """A waiting try held back by its endpoint's breaker is due later (its message says so too)."""
        self._if_waiting(job_id, target, attempt, "SET due_at = :v", {"N": str(until)})

    def _if_waiting(self, job_id: str, target: str, attempt: int, expression: str, value: dict[str, Any]) -> None:
        """`expression` (with its value as :v) if the delivery still waits for try number attempt+1."""
        try:
            self.db.update_item(
                TableName=self.table,
                Key=self._key(job_id, target),
                UpdateExpression=expression,
                ConditionExpression="#s = :retrying AND attempts_made = :n",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":retrying": {"S": "retrying"},
                    ":n": {"N": str(attempt)},
                    ":v": value,
                },
            )
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise

    def reopen(self, job_id: str, target: str) -> Delivery | None:
        """Make a delivery due again, on purpose: its schedule starts over from the attempts made, which keep their
        numbers. The record, for the message that makes the next try; None while a try is under way or due (a
        retry long overdue, or never queued, is reopened too)."""
        now = time.time()
        try:
            item = self.db.update_item(
                TableName=self.table,
                Key=self._key(job_id, target),
                UpdateExpression="SET #s = :retrying, due_at = :now, schedule_base = attempts_made, retry_queued = :no",
                ConditionExpression="#s IN (:delivered, :failed, :gone, :skipped) "
                "OR (#s = :retrying AND (due_at < :stale OR (retry_queued = :no AND due_at < :now)))",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":retrying": {"S": "retrying"},
                    ":delivered": {"S": "delivered"},
                    ":failed": {"S": "failed"},
                    ":gone": {"S": "gone"},
                    ":skipped": {"S": "skipped"},
                    ":now": {"N": str(now)},
                    ":stale": {"N": str(now - STALE_S)},
                    ":no": {"BOOL": False},
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            return None
        return _delivery(item)

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        return [
            {
                "target": item["target"]["S"],
                "url": item["url"]["S"],
                "event_type": item["event_type"]["S"],
                "webhook_id": item["message_id"]["S"],
                "status": item["status"]["S"],
                "attempts": json.loads(item["attempts"]["S"]),
            }
            for item in self._items(job_id)
        ]

    def records_for_job(self, job_id: str) -> list[Delivery]:
        return [_delivery(item) for item in self._items(job_id)]

    def _items(self, job_id: str) -> list[dict[str, Any]]:
        # At most one delivery per target: the job's url and MAX_ENDPOINTS, each well under a page.
        page = self.db.query(
            TableName=self.table,
            KeyConditionExpression="job_id = :j",
            ExpressionAttributeValues={":j": {"S": job_id}},
            ConsistentRead=True,
        )
        return list(page.get("Items", []))

    @staticmethod
    def _key(job_id: str, target: str) -> dict[str, Any]:
        return {"job_id": {"S": job_id}, "target": {"S": target}}


def _delivery(item: dict[str, Any]) -> Delivery:
    return Delivery(
        job_id=item["job_id"]["S"],
        target=item["target"]["S"],
        tenant=item["tenant"]["S"],
        event_type=item["event_type"]["S"],
        timestamp=item["timestamp"]["S"],
        message_id=item["message_id"]["S"],
        status=item["status"]["S"],
        attempts_made=int(item["attempts_made"]["N"]),
        lease_until=float(item["lease_until"]["N"]),
        due_at=float(item.get("due_at", {"N": "0"})["N"]),
        attempts=json.loads(item["attempts"]["S"]),
        schedule_base=int(item.get("schedule_base", {"N": "0"})["N"]),
        # Records written before the flag existed: only the overdue backstop speaks for them.
        retry_queued=item.get("retry_queued", {"BOOL": True})["BOOL"],
    )


def handle_queue_record(body: str, source_arn: str) -> None:
    """A record of the retry queue (by its ARN), else of the completions queue."""
    if source_arn and source_arn == settings().webhook_retry_queue_arn:
        handle_retry_message(body)
    else:
        handle_completion_record(body)


def redeliver(job_id: str) -> list[str]:
    """Send a job's event again to every target it went to that still wants it, with the same webhook-id: the
    targets made due (an endpoint since deleted, disabled, or no longer taking the event is left out)."""
    store, hooks = DeliveryStore(), WebhookStore()
    due = []
    for record in store.records_for_job(job_id):
        if record.target != JOB_TARGET:
            endpoint = _endpoint(hooks, record.tenant, record.target)
            if endpoint is None or not endpoint.enabled or record.event_type not in endpoint.events:
                continue
        reopened = store.reopen(job_id, record.target)
        if reopened is not None:
            _send_due(reopened, reopened.attempts_made)
            store.mark_queued(reopened)
            due.append(record.target)
    return due
