"""The scheduled batcher: waiting batch-tier jobs into provider batches, each job in exactly one.

Each run first carries on batches an earlier run left pending (its lease ran out: it died, or a call's answer was
lost), then looks at every batch queue and sends those that are full (`BatchMaxJobs`) or whose oldest job has waited
`BatchMaxWaitSeconds`. Every step is a conditional write, so runs that overlap or repeat change nothing twice:
- the batch record is written (pending, leased) before any job is claimed, with the jobs it means to take;
- each job is claimed only if no batch has it, so a job is in one batch whatever else runs;
- the input file is uploaded and recorded; a file uploaded by a run that died before recording it is never used;
- the provider's batch is created with darkroom's batch id in its metadata; a run carrying on a record that got this
  far looks for that batch first and creates one only if the provider has none, so a lost answer never makes two;
- the jobs move to `polling` and the batch's poller starts (by the batch's name, so once); then the record leaves
  the pending index.
A record that cannot be carried on (MAX_CARRIES takeovers, about an hour and a half) is given up: its jobs end, as
unbilled if nothing was created, as possibly billed if a batch may exist, so no job waits for it forever. One edit
whose inputs cannot be read or are refused fails alone; the rest of its batch goes on.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from darkroom import aws, catalog, ledger, storage
from darkroom.batches.records import BatchChanged, BatchRecord, BatchStore
from darkroom.errors import ProviderError, ProviderRejected
from darkroom.ids import new_batch_id
from darkroom.jobs import executions, manifests
from darkroom.jobs.store import Job, JobStore, LeaseLost, WaitingJob, batch_queue
from darkroom.observability import logger, metrics
from darkroom.settings import settings

if TYPE_CHECKING:  # most runs find nothing due: they never load the Batch API client (or httpx)
    from darkroom.providers.batches import OpenAIBatchApi

ENDPOINTS = {"generations": "/v1/images/generations", "edits": "/v1/images/edits"}
# darkroom's batch id in the provider batch's metadata: how a lost create is found again.
METADATA_KEY = "darkroom_batch"
# A batcher's hold on a record: longer than the batches function may run, so a live run is never taken over.
LEASE_S = 900.0
# OpenAI's completion window is 24 h; a batch is followed an hour past it, for its finalizing and files.
FOLLOW_S = 25 * 3600.0
CALL_TIMEOUT_S = 60.0
# The files darkroom uploads to OpenAI (a batch's requests, an edit's inputs) expire on their own after a week: the
# batch has done with them within 25 hours, and they should not outlive darkroom's own copies.
FILE_TTL_S = 7 * 86400
# Batches one run sends from one tenant's queue at most (a backlog is taken by the next runs, a minute apart).
MAX_BATCHES_PER_QUEUE = 20
# Takeovers of one pending record before it is given up.
MAX_CARRIES = 6
# Edits' input bytes one batch takes at most: each takeover uploads them again, and a run must have time to.
MAX_BATCH_INPUT_BYTES = 1024**3
# A run stops starting new work with this much of its invocation left.
STOP_BEFORE_END_MS = 90_000


def run(remaining_ms: Callable[[], int]) -> dict[str, list[str]]:
    """One scheduled pass: pending batches carried on, then every queue that is due sent. Returns the batch ids."""
    batches, jobs = BatchStore(), JobStore()
    report: dict[str, list[str]] = {"carried_on": [], "sent": []}
    for batch_id in batches.pending_before(time.time() - LEASE_S):
        if remaining_ms() < STOP_BEFORE_END_MS:
            return report
        record = batches.get(batch_id)
        if record is None or record.lease_until > time.time():
            continue
        try:
            ledger.set_aside()
            record = batches.take_over(record, LEASE_S)
            if record.carries > MAX_CARRIES:
                give_up(batches, jobs, record)
                continue
            _carry_on(batches, jobs, record, took_over=True)
            report["carried_on"].append(batch_id)
        except BatchChanged:
            continue  # another run has it
        except Exception:
            logger.exception("could not carry on a pending batch", extra={"batch_id": batch_id})
    for queue in queues():
        for tenant, chunk in _due_chunks(jobs.waiting_for_batch(queue)):
            if remaining_ms() < STOP_BEFORE_END_MS:
                break
            try:
                ledger.set_aside()
                assembled = _assemble(batches, jobs, queue, tenant, chunk)
                if assembled is not None:
                    record, claimed = assembled
                    _carry_on(batches, jobs, record, took_over=False, known=claimed)
                    report["sent"].append(record.id)
            except BatchChanged:
                continue
            except Exception:
                # Left pending: a later run carries it on once its lease has run out.
                logger.exception("could not send a batch", extra={"queue": queue})
    if report["sent"]:
        metrics.add_metric(name="BatchesSent", unit="Count", value=len(report["sent"]))
    logger.info("batcher done", extra=report)
    return report


def _api() -> OpenAIBatchApi:
    from darkroom.providers.registry import batch_api

    return batch_api()


def queues() -> list[str]:
    return [batch_queue(model, kind) for model in sorted(catalog.MODELS) for kind in ("generate", "edit")]


def give_up(batches: BatchStore, jobs: JobStore, record: BatchRecord) -> None:
    """The record could not be carried on: its jobs end, saying whether OpenAI may still bill them."""
    if record.state == "assembling":
        reason = ("batch_not_sent", "darkroom could not send the batch this job was in; it was never billed.")
    else:
        reason = (
            "batch_unknown",
            "darkroom lost track of the batch this job was sent in; OpenAI may still run and bill its request.",
        )
        if record.provider_batch_id:
            with contextlib.suppress(ProviderError):  # nobody follows it now: fewer lines billed for nothing
                _api().cancel_batch(record.provider_batch_id, timeout_s=CALL_TIMEOUT_S)
    for job in members(jobs, record):
        if job.status == "batch_queued":
            fail_queued(jobs, job, *reason)
    batches.advance(record, expected_state=record.state, state="ended", ended_at=time.time())
    metrics.add_metric(name="BatchesGivenUp", unit="Count", value=1)
    logger.error("batch given up", extra={"batch_id": record.id, "state": record.state, "jobs": len(record.jobs)})


def _due_chunks(waiting: list[WaitingJob]) -> Iterator[tuple[str, list[WaitingJob]]]:
    """Each tenant's waiting jobs in batches of BatchMaxJobs, oldest first: those full, or whose oldest job has
    waited BatchMaxWaitSeconds. A batch holds one tenant's jobs only: its status, counts and failures are the
    tenant's own business, and one tenant's troubles never hold up another's."""
    s = settings()
    by_tenant: dict[str, list[WaitingJob]] = {}
    for job in waiting:
        by_tenant.setdefault(job.tenant, []).append(job)
    for tenant, queued in by_tenant.items():
        for start in range(0, min(len(queued), s.batch_max_jobs * MAX_BATCHES_PER_QUEUE), s.batch_max_jobs):
            chunk = queued[start : start + s.batch_max_jobs]
            oldest = datetime.fromisoformat(chunk[0].created_at.replace("Z", "+00:00")).timestamp()
            if len(chunk) >= s.batch_max_jobs or time.time() - oldest >= s.batch_max_wait_s:
                yield tenant, chunk


def _assemble(
    batches: BatchStore, jobs: JobStore, queue: str, tenant: str, chunk: list[WaitingJob]
) -> tuple[BatchRecord, list[Job]] | None:
    """A new record naming the jobs it means to take, then each one claimed: the record and the jobs as claimed;
    None when another batch got them all."""
    endpoint = queue.split("|")[1]
    found = (jobs.get(waiting.id) for waiting in chunk)
    waiting = _within_input_bytes(
        [job for job in found if job and job.status == "batch_queued" and not job.batch_id and job.tenant == tenant]
    )
    if not waiting:
        return None
    now = time.time()
    record = BatchRecord(
        id=new_batch_id(),
        tenant=tenant,
        queue=queue,
        endpoint=ENDPOINTS[endpoint],
        state="assembling",
        created_at=now,
        jobs=[job.id for job in waiting],
        lease_id=uuid.uuid4().hex,
        lease_until=now + LEASE_S,
    )
    batches.create(record)
    claimed = []
    for job in waiting:
        try:
            claimed.append(jobs.claim_for_batch(job, record.id))
        except LeaseLost:
            continue  # another batch has it, or it was canceled
    if not claimed:
        batches.advance(record, expected_state="assembling", jobs=[], state="ended", ended_at=time.time())
        return None
    return batches.advance(record, expected_state="assembling", jobs=[job.id for job in claimed]), claimed


def _within_input_bytes(waiting: list[Job]) -> list[Job]:
    """The first jobs whose edit inputs add up to MAX_BATCH_INPUT_BYTES (at least one job)."""
    taken: list[Job] = []
    total = 0
    for job in waiting:
        inputs = job.inputs or {}
        size = sum(int(entry.get("bytes") or 0) for entry in [*inputs.get("images", []), inputs.get("mask") or {}])
        if taken and total + size > MAX_BATCH_INPUT_BYTES:
            break
        taken.append(job)
        total += size
    return taken


def members(jobs: JobStore, record: BatchRecord) -> list[Job]:
    """The record's jobs that this batch did claim, as they are now."""
    found = (jobs.get(job_id) for job_id in record.jobs)
    return [job for job in found if job is not None and job.batch_id == record.id]


def _carry_on(
    batches: BatchStore, jobs: JobStore, record: BatchRecord, *, took_over: bool, known: list[Job] | None = None
) -> BatchRecord:
    """Take the record from wherever it stopped to followed: uploaded, created, its jobs polling, its poller on.
    `known`: its jobs as the caller just wrote them (a batch just assembled), so they are not read again."""
    api = _api()
    if record.state == "assembling":
        waiting = [
            job for job in (known if known is not None else members(jobs, record)) if job.status == "batch_queued"
        ]
        lines, sent = _input_lines(api, jobs, waiting)
        if not sent:
            return batches.advance(record, expected_state="assembling", state="ended", ended_at=time.time())
        try:
            file_id = api.upload_file(
                lines, f"{record.id}.jsonl", "batch", timeout_s=CALL_TIMEOUT_S, expires_s=FILE_TTL_S
            )
        except ProviderRejected as exc:
            # OpenAI will never take this file: nothing was created or billed, so its jobs end here.
            for job in sent:
                fail_queued(jobs, job, "provider_rejected", f"OpenAI's Files API refused the batch: {exc.message}")
            return batches.advance(record, expected_state="assembling", state="ended", ended_at=time.time())
        record = batches.advance(
            record, expected_state="assembling", state="uploaded", input_file_id=file_id, jobs=[j.id for j in sent]
        )
        known = sent
    if record.state == "uploaded":
        record = _create(batches, jobs, api, record, took_over=took_over)
    if record.state == "submitted" and not record.followed:
        record = follow(batches, jobs, record, known)
    return record


def _create(
    batches: BatchStore, jobs: JobStore, api: OpenAIBatchApi, record: BatchRecord, *, took_over: bool
) -> BatchRecord:
    """The provider's batch: found by its metadata when an earlier run may have made it, else created. A lost or
    failed answer leaves the record `uploaded` for a later run, which looks before it creates."""
    assert record.input_file_id is not None
    found = None
    if took_over:
        found = api.find_batch(
            METADATA_KEY, record.id, created_after=int(record.created_at) - 600, timeout_s=CALL_TIMEOUT_S
        )
    try:
        batch = found or api.create_batch(
            record.input_file_id,
            record.endpoint,
            {METADATA_KEY: record.id},
            timeout_s=CALL_TIMEOUT_S,
            output_expires_s=FILE_TTL_S,
        )
    except ProviderRejected as exc:
        # The provider will never take this batch (its account, a limit): its jobs end here, nothing was billed.
        for job in members(jobs, record):
            fail_queued(jobs, job, "provider_rejected", f"OpenAI's Batch API refused the batch: {exc.message}")
        return batches.advance(record, expected_state="uploaded", state="ended", ended_at=time.time())
    logger.info(
        "batch created" if found is None else "batch found by its metadata",
        extra={"batch_id": record.id, "provider_batch_id": batch.id, "jobs": len(record.jobs)},
    )
    return batches.advance(
        record,
        expected_state="uploaded",
        state="submitted",
        provider_batch_id=batch.id,
        provider_status=batch.status,
        poll_until=time.time() + FOLLOW_S,
    )


def follow(batches: BatchStore, jobs: JobStore, record: BatchRecord, known: list[Job] | None = None) -> BatchRecord:
    """The submitted batch's jobs move to `polling` and its poller starts (once, by the batch's name); then the
    record leaves the pending index. Safe to repeat."""
    from darkroom.batches.follow import execution_input

    move_jobs(jobs, record, known)
    executions.start(record.id, execution_input(record), settings().batch_poller_state_machine_arn)
    return batches.advance(record, expected_state="submitted", followed=True)


def move_jobs(jobs: JobStore, record: BatchRecord, known: list[Job] | None = None) -> None:
    """Every job of the submitted batch still `batch_queued` moves to `polling` its provider batch (read again
    unless `known`)."""
    assert record.provider_batch_id is not None and record.poll_until is not None
    moving = [job for job in (known if known is not None else members(jobs, record)) if job.status == "batch_queued"]
    share = ledger.share_out(len(moving))
    for job in moving:
        try:
            with ledger.charged(job.id, share):
                jobs.sent_in_batch(
                    job,
                    provider_batch_id=record.provider_batch_id,
                    provider_status=record.provider_status or "validating",
                    poll_until=record.poll_until,
                )
        except LeaseLost:
            continue


def _input_lines(api: OpenAIBatchApi, jobs: JobStore, members: list[Job]) -> tuple[bytes, list[Job]]:
    """The JSONL file, one line per job (its custom_id the job's id), and the jobs in it. An edit's input images go
    up as files its line names; an edit whose inputs are gone, or refused by the provider, fails alone."""
    lines, sent = [], []
    for job in members:
        body: dict[str, Any] = dict(job.request)
        if job.kind == "edit":
            try:
                body.update(_edit_inputs(api, job))
            except ProviderRejected as exc:
                fail_queued(jobs, job, "provider_rejected", f"OpenAI refused this edit's input: {exc.message}")
                continue
            except Exception as exc:
                if aws.error_code(exc) not in ("404", "NoSuchKey"):
                    raise  # S3 or the provider may answer next time: the record is carried on later
                fail_queued(
                    jobs, job, "input_missing", "The edit's input files are gone from storage; submit it again."
                )
                continue
        url = ENDPOINTS["edits" if job.kind == "edit" else "generations"]
        lines.append(json.dumps({"custom_id": job.id, "method": "POST", "url": url, "body": body}))
        sent.append(job)
    return ("\n".join(lines) + "\n").encode(), sent


def _edit_inputs(api: OpenAIBatchApi, job: Job) -> dict[str, Any]:
    """An edit's stored inputs as provider files: `images` (and `mask`) by file id, as a JSON edit names them."""
    named: dict[str, Any] = {"images": []}
    with storage.input_files(job) as files:
        for field, (name, handle, _content_type) in files:
            file_id = api.upload_file(handle.read(), name, "vision", timeout_s=CALL_TIMEOUT_S, expires_s=FILE_TTL_S)
            if field == "mask":
                named["mask"] = {"file_id": file_id}
            else:
                named["images"].append({"file_id": file_id})
    return named


def fail_queued(jobs: JobStore, job: Job, code: str, message: str) -> None:
    try:
        ended = jobs.fail_batch_queued(job, code=code, message=message)
    except LeaseLost:
        return
    manifests.publish(jobs, ended)
