"""The batch poller: one step of a batch's execution (Wait -> step -> Choice), until every job in it has ended.

Each step checks the provider's batch and records its status and counts (jobs in the batch show them). Waits are
long and grow (`BatchFirstPollSeconds`, doubling up to `BatchMaxPollSeconds`): a batch takes minutes to hours, and a
check bills nothing but costs a state transition. A failed check is simply tried at the next step.

Once the batch has ended, the step reads its output file, then its error file, a line at a time: each line's images
are stored under its own job (`custom_id`), which ends with its own usage and half-price cost, or fails with the
line's error. A line naming a job that is not in this batch is ignored. Jobs the files do not mention end `failed`
with the batch's reason (expired, cancelled, failed). Reading stops with time to spare and the next step carries on
(at once): jobs already ended are passed over. Every job's end is conditional on it still polling this batch.

If every job of a batch still running has ended otherwise (canceled by its tenant), the step asks OpenAI to cancel the
batch: OpenAI cancels whole batches only, so a job canceled while others in its batch are still wanted keeps its
line running, and may still be billed for it, as its cancel message says.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

from darkroom import images, ledger, pricing, storage
from darkroom.batches import batcher
from darkroom.batches.records import BatchRecord, BatchStore
from darkroom.errors import ProviderBadResponse, ProviderError
from darkroom.jobs import polling
from darkroom.jobs.store import Job, JobStore
from darkroom.observability import logger, metrics
from darkroom.providers.batches import Batch, BatchLine
from darkroom.providers.registry import batch_api
from darkroom.settings import settings

CHECK_TIMEOUT_S = 30.0
# Reading stops with this much of the invocation left, and the next step carries on from where it stopped, which is
# also written down every SAVE_EVERY_LINES lines (a step that dies carries on from there).
READ_RESERVE_MS = 60_000
SAVE_EVERY_LINES = 50
# Why the jobs a batch never answered for fail, by how the batch ended.
UNANSWERED = {
    "expired": ("batch_expired", "OpenAI's batch expired (24 h) before it ran this job's request; it was not billed."),
    "cancelled": ("batch_cancelled", "OpenAI's batch was cancelled before it ran this job's request."),
    "completed": ("provider_bad_response", "OpenAI's batch completed without a result for this job."),
}


def execution_input(record: BatchRecord) -> dict[str, Any]:
    wait = max(1, math.ceil(settings().batch_first_poll_s))
    return {"batch_id": record.id, "poll": {"done": False, "wait_s": wait, "polls": 0, "failed_polls": 0}}


def step(batch_id: str, polls: int, failed_polls: int, remaining_ms: Callable[[], int]) -> dict[str, Any]:
    batches, jobs = BatchStore(), JobStore()
    record = batches.get(batch_id)
    if record is None or record.state == "ended":
        return _done()
    if record.state != "submitted" or record.provider_batch_id is None:
        return _next(polls, failed_polls)  # not created yet: the batcher carries it on
    if polls == 0:
        batcher.move_jobs(jobs, record)  # its batcher may have died after starting this execution
    polls += 1
    api = batch_api()
    try:
        batch = api.retrieve_batch(record.provider_batch_id, timeout_s=CHECK_TIMEOUT_S)
    except ProviderError as exc:
        logger.warning("batch check failed", extra={"batch_id": batch_id, "reason": exc.message})
        if time.time() > (record.poll_until or 0):
            return _past_deadline(batches, jobs, record, f"darkroom could not check the batch: {exc.message}")
        return _next(polls, failed_polls + 1)  # a check bills nothing: tried again until the deadline
    counts = {"total": batch.request_counts.total, "completed": batch.request_counts.completed}
    counts["failed"] = batch.request_counts.failed
    if batch.status != record.provider_status or counts != record.request_counts:
        record = batches.update(record, provider_status=batch.status, request_counts=counts)
    if batch.ended:
        return _collect(batches, jobs, record, batch, polls, failed_polls, remaining_ms)
    if not record.cancel_requested and all(job.terminal for job in batcher.members(jobs, record)):
        _cancel(batches, record)
    if time.time() > (record.poll_until or 0):
        return _past_deadline(batches, jobs, record, "OpenAI's batch did not end within 25 hours")
    return _next(polls, 0)


def _past_deadline(batches: BatchStore, jobs: JobStore, record: BatchRecord, why: str) -> dict[str, Any]:
    """The batch's follow deadline has passed: the jobs still waiting fail, saying they may still be billed."""
    assert record.provider_batch_id is not None
    message = f"{why}; OpenAI may still bill the requests it ran."
    _end_unanswered(jobs, record, record.provider_batch_id, ("provider_timeout", message))
    batches.update(record, state="ended", ended_at=time.time())
    return _done()


def _cancel(batches: BatchStore, record: BatchRecord) -> None:
    """Nobody waits for this batch any more: OpenAI is asked to stop it (best effort; asked again next step)."""
    assert record.provider_batch_id is not None
    try:
        batch_api().cancel_batch(record.provider_batch_id, timeout_s=CHECK_TIMEOUT_S)
    except ProviderError as exc:
        logger.warning("could not cancel a batch nobody waits for", extra={"batch_id": record.id, "why": exc.message})
        return
    batches.update(record, cancel_requested=True)
    logger.info("batch cancelled: every job in it was canceled", extra={"batch_id": record.id})


def _collect(
    batches: BatchStore,
    jobs: JobStore,
    record: BatchRecord,
    batch: Batch,
    polls: int,
    failed_polls: int,
    remaining_ms: Callable[[], int],
) -> dict[str, Any]:
    """Every line of the ended batch's files to its job, from where the last step stopped (`record.collected`);
    then the jobs it never answered for. Returns the next step."""
    members = set(record.jobs)
    # Each job's part of the batch's checks: this step's use, and the transitions and invocations of those before.
    share = ledger.share_out(len(members), sfn_transitions=3 * (polls - 1), lambda_requests=polls - 1)
    api = batch_api()
    files = (batch.output_file_id, batch.error_file_id)
    start_file, start_offset = int(record.collected.get("file", 0)), int(record.collected.get("offset", 0))
    try:
        for number in range(start_file, len(files)):
            file_id, start = files[number], start_offset if number == start_file else 0
            if file_id:
                budget_s = max(1.0, (remaining_ms() - READ_RESERVE_MS) / 1000)
                lines = api.read_results_from(file_id, start=start, timeout_s=budget_s)
                for read, (line, past) in enumerate(lines, start=1):
                    with ledger.charged(line.custom_id, share):
                        _take(jobs, members, line, batch, record.id)
                    out_of_time = remaining_ms() < READ_RESERVE_MS
                    if out_of_time or read % SAVE_EVERY_LINES == 0:
                        record = batches.update(record, collected={"file": number, "offset": past})
                    if out_of_time:  # the next step carries on from here, at once
                        return {"done": False, "wait_s": 0, "polls": polls, "failed_polls": failed_polls}
            record = batches.update(record, collected={"file": number + 1, "offset": 0})
    except ProviderError as exc:
        # The results stay at OpenAI for days and reading them bills nothing: tried again until the deadline,
        # since the jobs waiting on them were billed.
        logger.warning("could not read a batch's results", extra={"batch_id": record.id, "reason": exc.message})
        garbled = isinstance(exc, ProviderBadResponse) and failed_polls >= settings().poll_failures_tolerated
        if time.time() <= (record.poll_until or 0) and not garbled:
            return _next(polls, failed_polls + 1)
        return _past_deadline(batches, jobs, record, f"darkroom could not read the batch's results: {exc.message}")
    except Exception:
        # darkroom's own trouble storing a line (S3, DynamoDB): the results wait at OpenAI, so the next step tries
        # again from the last line written down, and the jobs already ended are passed over.
        logger.exception("could not store a batch's results", extra={"batch_id": record.id})
        if time.time() <= (record.poll_until or 0):
            return _next(polls, failed_polls + 1)
        return _past_deadline(batches, jobs, record, "darkroom could not store the batch's results")
    reason = UNANSWERED.get(batch.status) or _failed_reason(batch)
    _end_unanswered(jobs, record, batch.id, reason)
    batches.update(record, state="ended", ended_at=time.time())
    metrics.add_metric(name="BatchesEnded", unit="Count", value=1)
    logger.info("batch ended", extra={"batch_id": record.id, "status": batch.status, "jobs": len(record.jobs)})
    return _done()


def _take(jobs: JobStore, members: set[str], line: BatchLine, batch: Batch, batch_id: str) -> None:
    """One results line to its job, if the job is in this batch and still waiting for it."""
    if line.custom_id not in members:
        if line.custom_id:  # an unreadable line's job is failed with the batch's leftovers
            logger.warning("batch result for a job not in the batch", extra={"batch_id": batch_id})
        return
    job = jobs.get(line.custom_id)
    if job is not None and job.status == "polling" and job.prediction_id == batch.id:
        _conclude(jobs, job, line, batch)


def _conclude(jobs: JobStore, job: Job, line: BatchLine, batch: Batch) -> None:
    """One line: its images stored under its job, which succeeds at the batch price; or its failure."""
    if line.result is None:
        if line.status_code is None and line.error is not None:
            reason = UNANSWERED.get(line.error.code.removeprefix("batch_"), (line.error.code, line.error.message))
            polling.end(jobs, job, "failed", error=reason, provider_status=batch.status)
            return
        failure = line.failure() or ProviderBadResponse("the batch's line had neither images nor an error")
        polling.end(jobs, job, "failed", error=(failure.code, failure.message), provider_status=batch.status)
        return
    outputs = []
    for index, data in enumerate(line.result.images[: int(job.request.get("n", 1))]):
        try:
            outputs.append(storage.put_output(job, index, data, images.inspect(data)))
        except ProviderBadResponse as exc:
            polling.end(jobs, job, "failed", error=(exc.code, exc.message), provider_status=batch.status)
            return
    cost = pricing.cost_usd(job.model, line.result.usage, batch=True)
    polling.end(
        jobs, job, "succeeded", outputs=outputs, usage=line.result.usage, cost_usd=cost, provider_status=batch.status
    )
    metrics.add_metric(name="ImagesGenerated", unit="Count", value=len(outputs))


def _end_unanswered(jobs: JobStore, record: BatchRecord, provider_batch_id: str, reason: tuple[str, str]) -> None:
    for job in batcher.members(jobs, record):
        if job.status == "polling" and job.prediction_id == provider_batch_id:
            polling.end(jobs, job, "failed", error=reason)
        elif job.status == "batch_queued" and job.batch_id == record.id:
            batcher.fail_queued(jobs, job, *reason)


def _failed_reason(batch: Batch) -> tuple[str, str]:
    problem = batch.errors[0] if batch.errors else None
    detail = f"{problem.code}: {problem.message}" if problem else "no reason given"
    return "batch_failed", f"OpenAI's batch failed ({detail}); it ran none of its requests."


def _next(polls: int, failed_polls: int) -> dict[str, Any]:
    """After `polls` checks: the first wait, doubling up to the longest."""
    s = settings()
    wait = min(s.batch_max_poll_s, s.batch_first_poll_s * 2 ** max(0, min(polls - 1, 20)))
    return {"done": False, "wait_s": max(1, math.ceil(wait)), "polls": polls, "failed_polls": failed_polls}


def _done() -> dict[str, Any]:
    return {"done": True, "wait_s": 0, "polls": 0, "failed_polls": 0}


def handle_step(event: Any, remaining_ms: Callable[[], int]) -> dict[str, Any]:
    """One task of the batch poller state machine: `{"action": "poll", "batch_id", "poll": {...}}` checks once,
    `{"action": "give_up", "batch_id", "failure"}` ends what is left after the machine's own retries failed."""
    if not isinstance(event, dict) or not isinstance(event.get("batch_id"), str):
        raise ValueError("a batch poller step names its batch")
    if event.get("action") == "give_up":
        return give_up(event["batch_id"])
    state = event["poll"] if isinstance(event.get("poll"), dict) else {}
    return step(event["batch_id"], _count(state.get("polls")), _count(state.get("failed_polls")), remaining_ms)


def give_up(batch_id: str) -> dict[str, Any]:
    """darkroom's own errors kept the poller from going on: the jobs still waiting fail, saying so."""
    batches, jobs = BatchStore(), JobStore()
    record = batches.get(batch_id)
    if record is None or record.state == "ended" or record.provider_batch_id is None:
        return _done()
    logger.error("batch poller gave up", extra={"batch_id": batch_id})
    with contextlib.suppress(ProviderError):  # nobody follows it now: fewer lines billed for nothing
        batch_api().cancel_batch(record.provider_batch_id, timeout_s=CHECK_TIMEOUT_S)
    message = f"darkroom could not follow OpenAI's batch to its end; {polling.MAY_HAVE_CHARGED}"
    _end_unanswered(jobs, record, record.provider_batch_id, ("poller_failed", message))
    batches.update(record, state="ended", ended_at=time.time())
    return _done()


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
