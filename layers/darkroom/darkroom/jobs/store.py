"""Jobs in DynamoDB, and every change of state as one conditional write.

A worker owns a running job through a lease (`lease_id`, `lease_until`): each write it makes is conditional on
still holding that lease, so a duplicate SQS delivery, a second worker or a late retry can never run a job twice,
bill it twice or overwrite a terminal state. Each write also stamps a fresh `write_id`: when boto retries a write
whose first try landed but whose answer was lost, the retry's condition fails, and the stamp tells that apart from
a real conflict. Within `running`, `phase` says how far the owner got: `calling` (the
claim is taken right before the provider call, which may be in flight), then `storing` (the provider answered).

`sweep_at` puts a job in the sparse `by_sweep` index for as long as something could leave it stranded: from the
moment it is queued until its message is confirmed sent, while it runs from the end of its lease, and once it has
ended until its manifest is confirmed written. The sweeper looks only at entries older than its grace period, so a
healthy job never reaches it, and a job whose message is confirmed sent has no entry at all: a backlogged queue
gets no extra messages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from darkroom import aws, ledger
from darkroom.errors import InvalidRequest
from darkroom.ids import now_iso
from darkroom.observability import logger
from darkroom.settings import settings

TERMINAL = ("succeeded", "failed", "canceled")
# `polling`: an asynchronous provider took the job (its prediction id is recorded) and the poller state machine
# follows it; no worker lease, the execution named after the job owns it.
# `awaiting_upload`: an edit created by POST /v1/uploads, waiting for its files to land in S3 (until `upload`'s
# expires_at); it is in the sweep index from its expiry, so the sweeper ends it if they never all arrive.
# `batch_queued`: a batch-tier job waiting for the batcher (darkroom.batches) to send it in a batch; it is `polling`
# once its batch is created, followed by the batch's poller.
STATUSES = ("awaiting_upload", "batch_queued", "queued", "running", "polling", *TERMINAL)
BY_TENANT = "by_tenant"
BY_TENANT_STATUS = "by_tenant_status"
BY_SWEEP = "by_sweep"
# Batch-tier jobs waiting for a batch, by `batch_queue` ({model}|{endpoint}) and `batch_slot` ({tenant}#{created}#
# {id}: a tenant's jobs together, oldest first): sparse, as both are removed when a batch claims the job.
BY_BATCH_QUEUE = "by_batch_queue"
# Jobs that may serve the cache, by fingerprint (`cache_key`) and when they ended; sparse and keys-only.
BY_CACHE_KEY = "by_cache_key"
# The most waiting jobs one look at a batch queue reads (keys only, some 100 bytes each).
MAX_WAITING_READ = 20_000
# How long a batch-tier job may wait for a batch before the sweeper fails it (the batcher has been down all along).
BATCH_QUEUE_TIMEOUT_S = 24 * 3600
# The sweep index is spread over this many partition keys, so no single key takes every job's writes.
SWEEP_SHARDS = 8


class LeaseLost(Exception):
    """The job moved on without us (another owner, a cancel, a terminal state): stop touching it."""


class TransactionConflict(Exception):
    """A condition of a transaction failed; `failed[i]` says whether item i's did."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(f"transaction cancelled: {reasons}")
        self.failed = [reason == "ConditionalCheckFailed" for reason in reasons]


@dataclass(frozen=True)
class WaitingJob:
    """A batch-tier job waiting for a batch, as its queue lists it."""

    id: str
    tenant: str
    created_at: str


@dataclass
class Job:
    id: str
    tenant: str
    kind: str
    status: str
    request: dict[str, Any]
    created_at: str
    updated_at: str
    webhook_url: str | None = None
    # Which events go to webhook_url (None: all of them).
    webhook_events: list[str] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    started_at: str | None = None
    completed_at: str | None = None
    phase: str | None = None
    lease_id: str | None = None
    lease_until: float = 0.0
    provider_calls: int = 0
    transient_failures: int = 0
    rate_limits: int = 0
    next_attempt_at: str | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    cost_usd: Decimal | None = None
    # {code, message}, and what else the failure names (a moderation check's `categories`).
    error: dict[str, Any] | None = None
    write_id: str | None = None
    sweep_at: float | None = None
    # The provider route the job runs on (darkroom.routing), and the ones it may move to, in order, when this one
    # certainly did not generate; both decided when it was accepted. `routes_tried`: the routes it left, and why.
    route: str = "openai"
    fallbacks: list[str] = field(default_factory=list)
    routes_tried: list[dict[str, str]] = field(default_factory=list)
    # Asynchronous routes: the provider's id for the submission, its last reported status, and when polling gives up.
    prediction_id: str | None = None
    provider_status: str | None = None
    poll_until: float | None = None
    # Edits: the input files stored under inputs/{tenant}/{job}/ ({"images": [...], "mask": ..., "markup": ...}).
    inputs: dict[str, Any] | None = None
    # Uploads: the files expected ({"images": n, "mask": bool}) and until when (`expires_at`, epoch seconds).
    upload: dict[str, Any] | None = None
    # What the job holds of its tenant's quotas until it is settled ({"month", "usd"}: darkroom.quotas).
    quota: dict[str, Any] | None = None
    # When the ended job was counted in its tenant's usage and quotas (darkroom.usage.settle).
    settled_at: str | None = None
    # Previews stored while the provider streamed the image (darkroom.jobs.previews), in the order they came.
    previews: list[dict[str, Any]] = field(default_factory=list)
    # `standard`, or `batch`: sent through OpenAI's Batch API. A batch job waits in `batch_queue` until a batch claims
    # it (`batch_id`, darkroom's id of the batch); its `prediction_id` is then the provider's batch id.
    tier: str = "standard"
    batch_queue: str | None = None
    batch_id: str | None = None
    # The opt-in cache (darkroom.jobs.cache): whether the request asked for it; `cache_key`, set on a job that
    # generated its images, makes it a source for later requests with the same fingerprint; `cached_from`: the
    # source whose images a cached job reused.
    cache: bool = False
    cache_key: str | None = None
    cached_from: str | None = None
    # What the job used in AWS so far (darkroom.ledger's counters), added to by each write that carries a step's use.
    aws: dict[str, int] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return str(self.request.get("model", ""))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def next_attempt_due(self) -> datetime | None:
        """When a requeued job's retry is due (its message is delayed until then)."""
        if not self.next_attempt_at:
            return None
        return datetime.fromisoformat(self.next_attempt_at.replace("Z", "+00:00"))

    def lease_expired(self, now: float | None = None) -> bool:
        return self.lease_until < (time.time() if now is None else now)

    def cache_fingerprint(self) -> str | None:
        """What makes two jobs the same for the cache: tenant, kind, the request as sent to the provider (previews and
        the end user's id aside: they do not change the images) and every input's digest. None when an input's
        digest is unknown (stored before inputs were digested): such a job is never matched."""
        inputs = self.inputs or {}
        files = [("image", entry) for entry in inputs.get("images") or []]
        files += [(role, inputs[role]) for role in ("mask", "markup") if inputs.get(role)]
        if any(not isinstance(entry, dict) or not entry.get("sha256") for _, entry in files):
            return None
        request = {k: v for k, v in self.request.items() if k not in ("partial_images", "safety_identifier")}
        document = {
            "tenant": self.tenant,
            "kind": self.kind,
            # The routes it was accepted for, in order: a request pinned to a provider is not another provider's.
            "routes": [tried.get("route") for tried in self.routes_tried] + [self.route, *self.fallbacks],
            "request": request,
            "inputs": [[role, entry["sha256"]] for role, entry in files],
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True, ensure_ascii=True).encode()).hexdigest()

    def aws_usd(self) -> Decimal:
        """What the job has used in AWS so far, priced (its stored bytes kept for the outputs' lifecycle)."""
        return ledger.aws_usd(self.aws, retention_days=settings().output_retention_days)


# Attributes stored as JSON strings: nested maps of arbitrary shape, read back exactly as written.
_JSON_FIELDS = (
    "request",
    "metadata",
    "outputs",
    "usage",
    "error",
    "webhook_events",
    "inputs",
    "upload",
    "quota",
    "fallbacks",
    "routes_tried",
    "previews",
)
_INT_FIELDS = ("provider_calls", "transient_failures", "rate_limits")
_OPTIONAL_STR = (
    "webhook_url",
    "started_at",
    "completed_at",
    "phase",
    "lease_id",
    "next_attempt_at",
    "write_id",
    "prediction_id",
    "provider_status",
    "settled_at",
    "batch_queue",
    "batch_id",
    "cache_key",
    "cached_from",
)


def _to_item(job: Job) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": {"S": job.id},
        "tenant": {"S": job.tenant},
        "kind": {"S": job.kind},
        "status": {"S": job.status},
        "created_at": {"S": job.created_at},
        "updated_at": {"S": job.updated_at},
        "list_key": {"S": f"{job.created_at}#{job.id}"},
        "tenant_status": {"S": f"{job.tenant}#{job.status}"},
        "lease_until": {"N": str(job.lease_until)},
        "route": {"S": job.route},
        "tier": {"S": job.tier},
    }
    for name in _JSON_FIELDS:
        item[name] = {"S": json.dumps(getattr(job, name), ensure_ascii=False)}  # \u escapes would triple a prompt
    for name in _INT_FIELDS:
        item[name] = {"N": str(getattr(job, name))}
    for name in _OPTIONAL_STR:
        if getattr(job, name) is not None:
            item[name] = {"S": getattr(job, name)}
    if job.cost_usd is not None:
        item["cost_usd"] = {"N": str(job.cost_usd)}
    if job.sweep_at is not None:
        item["sweep_at"] = {"N": str(job.sweep_at)}
        item["sweep_shard"] = {"S": sweep_shard(job.id)}
    if job.poll_until is not None:
        item["poll_until"] = {"N": str(job.poll_until)}
    if job.batch_queue is not None:
        item["batch_slot"] = {"S": f"{job.tenant}#{job.created_at}#{job.id}"}
    for name, n in job.aws.items():
        item[ledger.ATTRIBUTE_PREFIX + name] = {"N": str(n)}
    if job.cache:
        item["cache"] = {"BOOL": True}
    return item


def _cache_source(job: Job, status: str) -> dict[str, Any]:
    """A job that asked for the cache and generated its images becomes a source for later ones."""
    if status != "succeeded" or not job.cache or job.cached_from:
        return {}
    fingerprint = job.cache_fingerprint()
    return {"cache_key": fingerprint} if fingerprint else {}


CONFLICT_TRIES = 5


def transact(db: Any, items: list[dict[str, Any]], *, token: str) -> None:
    """TransactWriteItems; TransactionConflict when a condition failed. A transaction that only collided with
    another one in flight on the same item (a tenant's counters take every submission of the tenant) is tried
    again a few times, under a new token since the canceled one wrote nothing."""
    for attempt in range(CONFLICT_TRIES):
        try:
            db.transact_write_items(TransactItems=items, ClientRequestToken=f"{token}-{attempt}" if attempt else token)
            return
        except Exception as exc:
            if aws.error_code(exc) != "TransactionCanceledException":
                raise
            reasons = [reason.get("Code", "") for reason in getattr(exc, "response", {}).get("CancellationReasons", [])]
            if "ConditionalCheckFailed" in reasons:
                raise TransactionConflict(reasons) from None
            if attempt == CONFLICT_TRIES - 1 or set(reasons) - {"None", "TransactionConflict", ""}:
                raise  # throttling or another failure: retryable by the caller, not a verdict
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))


def sweep_shard(job_id: str) -> str:
    return str(zlib.crc32(job_id.encode()) % SWEEP_SHARDS)


def _from_item(item: dict[str, Any]) -> Job:
    extra: dict[str, Any] = {name: json.loads(item[name]["S"]) for name in _JSON_FIELDS if name in item}
    extra.update({name: int(item[name]["N"]) for name in _INT_FIELDS if name in item})
    extra.update({name: item[name]["S"] for name in _OPTIONAL_STR if name in item})
    return Job(
        id=item["id"]["S"],
        tenant=item["tenant"]["S"],
        kind=item["kind"]["S"],
        status=item["status"]["S"],
        created_at=item["created_at"]["S"],
        updated_at=item["updated_at"]["S"],
        lease_until=float(item.get("lease_until", {"N": "0"})["N"]),
        cost_usd=Decimal(item["cost_usd"]["N"]) if "cost_usd" in item else None,
        sweep_at=float(item["sweep_at"]["N"]) if "sweep_at" in item else None,
        route=item.get("route", {"S": "openai"})["S"],
        tier=item.get("tier", {"S": "standard"})["S"],
        poll_until=float(item["poll_until"]["N"]) if "poll_until" in item else None,
        aws=ledger.counts_of(item),
        cache=item.get("cache", {}).get("BOOL", False),
        **extra,
    )


def _is_conditional_failure(exc: Exception) -> bool:
    return aws.error_code(exc) == "ConditionalCheckFailedException"


def _already_written(exc: Exception, write_id: str) -> bool:
    """True when a failed condition only failed because this very write had already landed (a retried request)."""
    item = (getattr(exc, "response", None) or {}).get("Item") or {}
    return bool(item.get("write_id", {}).get("S") == write_id)


class JobStore:
    def __init__(self, table: str | None = None, client: Any = None) -> None:
        self.table = table or settings().jobs_table
        self.db = client or aws.client("dynamodb")

    # Reads

    def get(self, job_id: str) -> Job | None:
        item = self.db.get_item(TableName=self.table, Key={"id": {"S": job_id}}, ConsistentRead=True).get("Item")
        return _from_item(item) if item else None

    def status_of(self, job_id: str) -> str | None:
        """The job's status alone, eventually consistent: half a read unit however large the job's item is."""
        item = self.db.get_item(
            TableName=self.table,
            Key={"id": {"S": job_id}},
            ProjectionExpression="#status",
            ExpressionAttributeNames={"#status": "status"},
        ).get("Item")
        return item["status"]["S"] if item else None

    def get_for_tenant(self, job_id: str, tenant: str) -> Job | None:
        """Another tenant's job is indistinguishable from a missing one."""
        job = self.get(job_id) if job_id.startswith("job_") and len(job_id) <= 64 else None
        return job if job and job.tenant == tenant else None

    def list_for_tenant(
        self, tenant: str, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        """Newest first. Asks for one row more than `limit` to know whether another page exists, which also works
        where DynamoDB (or moto) ends a full page without a LastEvaluatedKey."""
        if status:
            index, key_name, key_value = BY_TENANT_STATUS, "tenant_status", f"{tenant}#{status}"
        else:
            index, key_name, key_value = BY_TENANT, "tenant", tenant
        query: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": "#k = :k",
            "ExpressionAttributeNames": {"#k": key_name},
            "ExpressionAttributeValues": {":k": {"S": key_value}},
            "ScanIndexForward": False,
            "Limit": limit + 1,
        }
        if cursor:
            list_key = decode_cursor(cursor)
            query["ExclusiveStartKey"] = {
                "id": {"S": list_key.rpartition("#")[2]},
                key_name: {"S": key_value},
                "list_key": {"S": list_key},
            }
        jobs: list[Job] = []
        while len(jobs) <= limit:
            page = self.db.query(**query)
            jobs += [_from_item(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if len(jobs) > limit:
            return jobs[:limit], cursor_after(jobs[limit - 1])
        return jobs, None

    def waiting_for_batch(self, queue: str) -> list[WaitingJob]:
        """Batch-tier jobs of one queue ({model}|{endpoint}) that no batch has claimed yet: each tenant's together,
        oldest first. The index is eventually consistent: a job it still shows may have been claimed or canceled,
        which the claim finds out."""
        query: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": BY_BATCH_QUEUE,
            "KeyConditionExpression": "batch_queue = :q",
            "ExpressionAttributeValues": {":q": {"S": queue}},
        }
        waiting: list[WaitingJob] = []
        while len(waiting) < MAX_WAITING_READ:
            page = self.db.query(**query)
            for item in page.get("Items", []):
                tenant, created_at, job_id = item["batch_slot"]["S"].rsplit("#", 2)
                waiting.append(WaitingJob(job_id, tenant, created_at))
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return waiting

    def cache_sources(self, fingerprint: str, *, ended_since: str, limit: int = 3) -> list[str]:
        """The newest jobs with this fingerprint that ended since `ended_since` (ISO), newest first."""
        page = self.db.query(
            TableName=self.table,
            IndexName=BY_CACHE_KEY,
            KeyConditionExpression="cache_key = :key AND completed_at >= :since",
            ExpressionAttributeValues={":key": {"S": fingerprint}, ":since": {"S": ended_since}},
            ScanIndexForward=False,
            Limit=limit,
        )
        return [item["id"]["S"] for item in page.get("Items", [])]

    def due_for_sweep(self, before: float, *, limit: int) -> list[str]:
        """Ids of jobs whose sweep time is before `before`, oldest first within each shard, at most `limit`."""
        ids: list[str] = []
        for shard in range(SWEEP_SHARDS):
            query: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": BY_SWEEP,
                "KeyConditionExpression": "sweep_shard = :shard AND sweep_at < :before",
                "ExpressionAttributeValues": {":shard": {"S": str(shard)}, ":before": {"N": str(before)}},
            }
            while len(ids) < limit:
                page = self.db.query(**query, Limit=limit - len(ids))
                ids += [item["id"]["S"] for item in page.get("Items", [])]
                if "LastEvaluatedKey" not in page:
                    break
                query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return ids[:limit]

    # Writes

    def create(self, job: Job, *, together_with: list[dict[str, Any]] | None = None) -> None:
        """A new queued job, in the sweep index until `message_sent` confirms its message went out.

        `together_with`: transaction items written atomically with the job (an idempotency key's claim); if one of
        their conditions fails, nothing is written and TransactionConflict says which."""
        job.write_id = uuid.uuid4().hex
        # A queued job is swept if its message is not confirmed; a job awaiting uploads once they are overdue; a batch
        # job if no batch has taken it within a day.
        if job.status == "awaiting_upload" and job.upload:
            job.sweep_at = float(job.upload["expires_at"])
        elif job.status == "batch_queued":
            job.sweep_at = time.time() + BATCH_QUEUE_TIMEOUT_S
        else:
            job.sweep_at = time.time()
        meter, use = ledger.take_for(job.id)
        before, job.aws = job.aws, ledger.plus(job.aws, use)
        put = {"TableName": self.table, "Item": _to_item(job), "ConditionExpression": "attribute_not_exists(id)"}
        try:
            self._put(job, job.write_id, put, together_with)
        except BaseException:
            job.aws = before
            if meter:
                meter.add(use)
            raise

    def _put(self, job: Job, write_id: str, put: dict[str, Any], together_with: list[dict[str, Any]] | None) -> None:
        if together_with:
            # The request token makes a boto retry of a transaction that landed a no-op instead of a conflict...
            try:
                self._transact([{"Put": put}, *together_with], token=write_id)
            except TransactionConflict as exc:
                # ... for ten minutes, and not on every DynamoDB look-alike: the job already there with this very
                # write's id says the transaction landed (every item of it, or none).
                if not (exc.failed[:1] == [True] and self._written(job)):
                    raise
            return
        try:
            self.db.put_item(**put, ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except Exception as exc:
            if not (_is_conditional_failure(exc) and _already_written(exc, write_id)):
                raise

    def delete_unstarted(self, job_id: str, *, together_with: list[dict[str, Any]] | None = None) -> bool:
        """Undo `create` when the job could not be enqueued, so no job sits queued without a message.

        False when the job has already moved on (its message did go out after all, and a worker took it)."""
        delete = {
            "TableName": self.table,
            "Key": {"id": {"S": job_id}},
            "ConditionExpression": "#s = :queued",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":queued": {"S": "queued"}},
        }
        try:
            if together_with:
                self._transact([{"Delete": delete}, *together_with], token=uuid.uuid4().hex)
            else:
                self.db.delete_item(**delete)
        except Exception as exc:
            if not (isinstance(exc, TransactionConflict) or _is_conditional_failure(exc)):
                raise
            return self.get(job_id) is None
        return True

    def _written(self, job: Job) -> bool:
        stored = self.get(job.id)
        return stored is not None and stored.write_id == job.write_id

    def _transact(self, items: list[dict[str, Any]], *, token: str) -> None:
        transact(self.db, items, token=token)

    def claim(self, job: Job, lease_s: float) -> Job:
        """queued -> running for one provider call, under a fresh lease.

        Conditional on the call count and the route too: a stale read or an old duplicate message cannot claim a job
        that has meanwhile been tried and requeued, or moved to another route. LeaseLost if the job is not queued at
        that count on that route.
        """
        lease_until = time.time() + lease_s
        return self._update(
            job,
            status="running",
            **self._untouched_condition(job),
            sets={
                "phase": "calling",
                "provider_calls": job.provider_calls + 1,
                "lease_id": uuid.uuid4().hex,
                "lease_until": lease_until,
                "started_at": job.started_at or now_iso(),
                "sweep_at": lease_until,
            },
            removes=("next_attempt_at",),
        )

    def take_over(self, job: Job, lease_s: float) -> Job:
        """Take a running job whose owner's lease ran out (the owner crashed or timed out), to finish it."""
        lease_until = time.time() + lease_s
        return self._update(
            job,
            status="running",
            condition="#s = :running AND lease_id = :lease AND lease_until < :now",
            values={
                ":running": {"S": "running"},
                ":lease": {"S": job.lease_id or ""},
                ":now": {"N": str(time.time())},
            },
            sets={"lease_id": uuid.uuid4().hex, "lease_until": lease_until, "sweep_at": lease_until},
        )

    def advance(self, job: Job, **sets: Any) -> Job:
        """Change fields of a running job we hold the lease of."""
        return self._update(job, status="running", **self._lease_condition(job), sets=sets)

    def requeue(self, job: Job, *, next_attempt_at: str, **sets: Any) -> Job:
        """running -> queued for another attempt later (its counters, or its route, changed by `sets`); the lease
        ends here."""
        return self._update(
            job,
            status="queued",
            **self._lease_condition(job),
            sets={"next_attempt_at": next_attempt_at, "lease_until": 0.0, "sweep_at": time.time(), **sets},
            removes=("phase", "lease_id"),
        )

    def reroute(self, job: Job, **sets: Any) -> Job:
        """A queued job moves to another route before any call on this one (its breaker is open): LeaseLost when a
        worker claimed it or it ended meanwhile."""
        return self._update(
            job,
            status="queued",
            **self._untouched_condition(job),
            sets=sets,
        )

    def message_sent(self, job: Job) -> None:
        """The queued job's message went out: the queue owns it now, so it leaves the sweep index. Nothing to do
        when the job has moved on meanwhile (a worker already took it)."""
        self._leave_sweep_index(
            job,
            condition="#s = :queued AND provider_calls = :calls",
            values={":queued": {"S": "queued"}, ":calls": {"N": str(job.provider_calls)}},
        )

    def manifest_written(self, job: Job) -> None:
        """An ended job's manifest is in S3: it leaves the sweep index. Nothing to do if it already has."""
        self._leave_sweep_index(
            job, condition="#s = :status AND attribute_exists(sweep_at)", values={":status": {"S": job.status}}
        )

    def _leave_sweep_index(self, job: Job, *, condition: str, values: dict[str, Any]) -> None:
        """A confirmation, never an error: if this write fails, the job stays in the index and the sweeper does
        once more what was just done (one more message, which the worker's rules make harmless, or a manifest
        found already written)."""
        self._bookkeeping(job, condition=condition, values=values, sets={}, removes=("sweep_at",))

    def _bookkeeping(
        self, job: Job, *, condition: str, values: dict[str, Any], sets: dict[str, Any], removes: tuple[str, ...] = ()
    ) -> None:
        """A write of the sweep index alone: it never fails its caller, who has already done the real work."""
        try:
            self._update(
                job,
                status=job.status,
                condition=condition,
                values=values,
                sets=sets,
                removes=removes,
                bookkeeping=True,
            )
        except LeaseLost:
            pass
        except Exception:
            logger.warning("could not update a job's sweep index entry", extra={"job_id": job.id}, exc_info=True)

    # Asynchronous providers: after the submission, the job is `polling` and its prediction id is what every later
    # write is conditional on.

    def start_polling(self, job: Job, *, prediction_id: str, provider_status: str, poll_until: float) -> Job:
        """running -> polling, right after the provider took the submission; the lease ends here. The job stays in
        the sweep index until `poller_started` confirms an execution follows it."""
        return self._update(
            job,
            status="polling",
            **self._lease_condition(job),
            sets={
                "prediction_id": prediction_id,
                "provider_status": provider_status,
                "poll_until": poll_until,
                "lease_until": 0.0,
                "sweep_at": time.time(),
            },
            removes=("phase", "lease_id"),
        )

    def poller_started(self, job: Job, *, check_at: float) -> None:
        """An execution follows this polling job: the sweeper looks at it again at `check_at`, once it should long
        have ended, and not before."""
        self._bookkeeping(job, **self._polling_condition(job), sets={"sweep_at": check_at})

    def record_provider_status(self, job: Job, provider_status: str) -> Job:
        return self._update(
            job, status="polling", **self._polling_condition(job), sets={"provider_status": provider_status}
        )

    def finish_polling(self, job: Job, status: str, *, error: dict[str, Any] | None = None, **sets: Any) -> Job:
        """polling -> a terminal state, for whoever follows the job's prediction (the poller, or the sweeper)."""
        return self._update(
            job,
            status=status,
            **self._polling_condition(job),
            sets={
                "completed_at": now_iso(),
                "error": error,
                "sweep_at": time.time(),
                **_cache_source(job, status),
                **sets,
            },
        )

    def finish(self, job: Job, status: str, *, error: dict[str, Any] | None = None, **sets: Any) -> Job:
        """running -> a terminal state, for the lease holder."""
        return self._update(
            job,
            status=status,
            **self._lease_condition(job),
            sets={
                "completed_at": now_iso(),
                "error": error,
                "lease_until": 0.0,
                "sweep_at": time.time(),
                **_cache_source(job, status),
                **sets,
            },
            removes=("phase", "lease_id"),
        )

    def serve_from_cache(self, job: Job, *, source: Job, outputs: list[dict[str, Any]]) -> Job:
        """queued -> succeeded with copies of `source`'s images, before any provider call: no usage, no cost.
        LeaseLost when a worker claimed it or it ended meanwhile."""
        now = now_iso()
        return self._update(
            job,
            status="succeeded",
            **self._untouched_condition(job),
            sets={
                "completed_at": now,
                "started_at": now,
                "outputs": outputs,
                "usage": None,
                "cost_usd": Decimal(0),
                "cached_from": source.cached_from or source.id,
                "sweep_at": time.time(),
            },
            removes=("next_attempt_at",),
        )

    def fail_abandoned(self, job: Job, *, code: str, message: str) -> Job:
        """Fail a job whose owner is gone: queued, or running with an expired lease."""
        return self._update(
            job,
            status="failed",
            condition="(#s = :queued AND provider_calls = :calls) OR (#s = :running AND lease_until < :now)",
            values={
                ":queued": {"S": "queued"},
                ":calls": {"N": str(job.provider_calls)},
                ":running": {"S": "running"},
                ":now": {"N": str(time.time())},
            },
            sets={
                "completed_at": now_iso(),
                "error": {"code": code, "message": message},
                "lease_until": 0.0,
                "sweep_at": time.time(),
            },
            removes=("phase", "lease_id"),
        )

    # Uploads: an edit waiting for its files.

    def uploads_complete(self, job: Job, *, inputs: dict[str, Any]) -> Job:
        """awaiting_upload -> queued with its stored inputs; in the sweep index until its message is confirmed sent,
        as a new job is (a batch-tier job: batch_queued, in its batch queue). LeaseLost if another event got there
        first."""
        if job.tier == "batch":
            return self._update(
                job,
                status="batch_queued",
                condition="#s = :awaiting",
                values={":awaiting": {"S": "awaiting_upload"}},
                sets={
                    "inputs": inputs,
                    "batch_queue": _batch_queue_of(job),
                    "sweep_at": time.time() + BATCH_QUEUE_TIMEOUT_S,
                },
            )
        return self._update(
            job,
            status="queued",
            condition="#s = :awaiting",
            values={":awaiting": {"S": "awaiting_upload"}},
            sets={"inputs": inputs, "sweep_at": time.time()},
        )

    def sweep_again_at(self, job: Job, at: float) -> None:
        """A job the sweeper left to what moves it (an upload handed back to the uploads function, a batch job its
        batcher or poller will end): it looks again at `at`, not every pass."""
        self._bookkeeping(job, condition="#s = :seen", values={":seen": {"S": job.status}}, sets={"sweep_at": at})

    def fail_waiting(self, job: Job, *, code: str, message: str) -> Job:
        """awaiting_upload -> failed: its files broke a rule, or never all arrived."""
        return self._update(
            job,
            status="failed",
            condition="#s = :awaiting",
            values={":awaiting": {"S": "awaiting_upload"}},
            sets={"completed_at": now_iso(), "error": {"code": code, "message": message}, "sweep_at": time.time()},
        )

    # Batch-tier jobs: claimed by one batch (conditional on no batch having it), then `polling` its provider batch.

    def claim_for_batch(self, job: Job, batch_id: str) -> Job:
        """batch_queued -> batch_queued in `batch_id`, leaving the batch queue; LeaseLost if another batch claimed it
        first or it was canceled."""
        return self._update(
            job,
            status="batch_queued",
            condition="#s = :queued AND attribute_not_exists(batch_id)",
            values={":queued": {"S": "batch_queued"}},
            sets={"batch_id": batch_id},
            removes=("batch_queue",),
        )

    def sent_in_batch(self, job: Job, *, provider_batch_id: str, provider_status: str, poll_until: float) -> Job:
        """batch_queued -> polling: its batch exists at the provider. The sweeper looks once the batch's poller should
        long have ended."""
        return self._update(
            job,
            status="polling",
            condition="#s = :queued AND batch_id = :batch",
            values={":queued": {"S": "batch_queued"}, ":batch": {"S": job.batch_id or ""}},
            sets={
                "prediction_id": provider_batch_id,
                "provider_status": provider_status,
                "poll_until": poll_until,
                "started_at": now_iso(),
                "sweep_at": poll_until + BATCH_SWEEP_MARGIN_S,
            },
        )

    def fail_batch_queued(self, job: Job, *, code: str, message: str) -> Job:
        """batch_queued -> failed, as it was read: unclaimed (never sent), or in the batch it was read in."""
        claimed = "batch_id = :batch" if job.batch_id else "attribute_not_exists(batch_id)"
        values = {":queued": {"S": "batch_queued"}, **({":batch": {"S": job.batch_id}} if job.batch_id else {})}
        return self._update(
            job,
            status="failed",
            condition=f"#s = :queued AND {claimed}",
            values=values,
            sets={"completed_at": now_iso(), "error": {"code": code, "message": message}, "sweep_at": time.time()},
            removes=("batch_queue",),
        )

    def cancel(self, job: Job, *, message: str = "Canceled at the tenant's request.") -> Job:
        """queued, awaiting_upload, batch_queued (before a batch claims it) or polling -> canceled. LeaseLost when
        the job is no longer in the state it was read in."""
        if job.status not in ("queued", "polling", "awaiting_upload", "batch_queued"):
            raise LeaseLost(f"job {job.id} is {job.status}")
        unclaimed = " AND attribute_not_exists(batch_id)" if job.status == "batch_queued" else ""
        return self._update(
            job,
            status="canceled",
            condition="#s = :seen" + unclaimed,
            values={":seen": {"S": job.status}},
            sets={
                "completed_at": now_iso(),
                "error": {"code": "canceled", "message": message},
                "sweep_at": time.time(),
            },
            removes=("next_attempt_at", "batch_queue"),  # out of the batch queue too, or it would clog it
        )

    @staticmethod
    def _polling_condition(job: Job) -> dict[str, Any]:
        return {
            "condition": "#s = :polling AND prediction_id = :prediction",
            "values": {":polling": {"S": "polling"}, ":prediction": {"S": job.prediction_id or ""}},
        }

    @staticmethod
    def _untouched_condition(job: Job) -> dict[str, Any]:
        """The job is still queued as it was read: at its call count, on its route."""
        return {
            "condition": "#s = :queued AND provider_calls = :calls AND route = :route",
            "values": {
                ":queued": {"S": "queued"},
                ":calls": {"N": str(job.provider_calls)},
                ":route": {"S": job.route},
            },
        }

    @staticmethod
    def _lease_condition(job: Job) -> dict[str, Any]:
        return {
            "condition": "#s = :running AND lease_id = :lease",
            "values": {":running": {"S": "running"}, ":lease": {"S": job.lease_id or ""}},
        }

    def _update(
        self,
        job: Job,
        *,
        status: str,
        condition: str,
        values: dict[str, Any],
        sets: dict[str, Any],
        removes: tuple[str, ...] = (),
        bookkeeping: bool = False,
    ) -> Job:
        """One conditional write. `bookkeeping` writes (the sweep index) change nothing a client sees, so they leave
        `updated_at` as it is: the job and its manifest keep agreeing."""
        sets = {**sets, "write_id": uuid.uuid4().hex}
        meter, use = ledger.take_for(job.id)
        changed = Job(**{**job.__dict__, **sets, "status": status, "aws": ledger.plus(job.aws, use)})
        if not bookkeeping:
            changed.updated_at = now_iso()
        for name in removes:
            setattr(changed, name, None)
        item = _to_item(changed)
        names = {"#s": "status"}
        values = dict(values)
        set_parts, remove_parts = [], []
        derived: tuple[str, ...] = ("sweep_shard",) if "sweep_at" in sets or "sweep_at" in removes else ()
        if "batch_queue" in sets or "batch_queue" in removes:
            derived += ("batch_slot",)
        stamped = () if bookkeeping else ("updated_at",)
        for i, name in enumerate(dict.fromkeys(("status", *stamped, "tenant_status", *sets, *removes, *derived))):
            names[f"#f{i}"] = name
            if name in item:  # a field set to None is absent from the item: remove it
                values[f":v{i}"] = item[name]
                set_parts.append(f"#f{i} = :v{i}")
            else:
                remove_parts.append(f"#f{i}")
        expression = "SET " + ", ".join(set_parts)
        if remove_parts:
            expression += " REMOVE " + ", ".join(remove_parts)
        if use:  # ADD: a write retried after it landed adds nothing twice (it fails its condition)
            for name, n in use.items():
                names[f"#a_{name}"] = ledger.ATTRIBUTE_PREFIX + name
                values[f":a_{name}"] = {"N": str(n)}
            expression += " ADD " + ", ".join(f"#a_{name} :a_{name}" for name in use)
        try:
            self.db.update_item(
                TableName=self.table,
                Key={"id": {"S": job.id}},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as exc:
            landed = _is_conditional_failure(exc) and _already_written(exc, sets["write_id"])
            if not landed and meter:
                meter.add(use)
            if not _is_conditional_failure(exc):
                raise
            if not landed:
                raise LeaseLost(f"job {job.id} is no longer in the state this change expects") from None
        return changed


# How long after a batch's polling deadline its poller should surely have ended.
BATCH_SWEEP_MARGIN_S = 3600.0


def batch_queue(model: str, kind: str) -> str:
    """The batch queue a batch-tier job waits in: one per model and endpoint, as a batch holds one of each."""
    return f"{model}|{'edits' if kind == 'edit' else 'generations'}"


def _batch_queue_of(job: Job) -> str:
    return batch_queue(job.model, job.kind)


def cursor_after(job: Job) -> str:
    """The cursor of the page that starts after `job`."""
    return base64.urlsafe_b64encode(f"{job.created_at}#{job.id}".encode()).decode().rstrip("=")


# A cursor is the position of the last job of a page: its `list_key`, exactly as darkroom writes it.
_LIST_KEY = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z#job_[0-9a-z]{26}")


def decode_cursor(cursor: str) -> str:
    """The list key a cursor carries. Anything darkroom did not issue is the client's mistake (400): a forged key
    must never reach DynamoDB, whose ValidationException would read as darkroom's own failure."""
    list_key = ""
    if len(cursor) <= 128 and cursor.isascii():
        try:
            list_key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        except ValueError:
            list_key = ""
    if not _LIST_KEY.fullmatch(list_key):
        raise InvalidRequest(
            "The cursor is not one this API returned; pass next_cursor unchanged.",
            field="cursor",
            rule="cursor_invalid",
        )
    return list_key
