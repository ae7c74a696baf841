"""What the worker does with one message from the jobs queue.

The rules that keep every job to one terminal state and at most one billed provider call:
- a message only ever moves a job forward through a conditional write (darkroom.jobs.store);
- a retry is a new, delayed message sent after the job is back to `queued`; the current message is then done;
- a job found `running` under a live lease belongs to someone else: the message fails and comes back later;
- a job found `running` under an expired lease is recovered: finished from S3 if the provider had answered and every
  output was stored, failed as `interrupted` otherwise (its call may have been billed, so it is never repeated);
- a terminal job only gets its manifest rewritten if it is missing.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from darkroom import images, pricing, queue, storage
from darkroom.errors import (
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderRefused,
    ProviderRejected,
    ProviderUnavailable,
)
from darkroom.jobs.store import Job, JobStore, LeaseLost
from darkroom.jobs.views import manifest_document
from darkroom.observability import logger, metrics
from darkroom.providers.registry import provider_for
from darkroom.settings import settings

# Time kept back from the invocation for storing outputs after the provider answers.
STORE_RESERVE_S = 30.0
LEASE_MARGIN_S = 30.0


class JobBusy(Exception):
    """Another worker holds this job's lease: leave the message on the queue for later."""


RemainingMs = Callable[[], int]


def handle_queue_message(body: str, source_arn: str, remaining_ms: RemainingMs) -> None:
    """One SQS record from the jobs queue or, when `source_arn` is the dead-letter queue's, from that.

    A message darkroom cannot read fails on the jobs queue, so it reaches the dead-letter queue where operators
    look; there it is logged and dropped rather than failing forever.
    """
    dead_letter = bool(source_arn) and source_arn == settings().jobs_dlq_arn
    try:
        message = json.loads(body)
        if not isinstance(message, dict) or not isinstance(message.get("job_id"), str):
            raise ValueError("not a job message")
    except ValueError:
        if dead_letter:
            logger.error("unreadable dead letter dropped", extra={"body": body[:1000]})
            return
        raise
    if dead_letter:
        handle_dead_letter(message)
    else:
        handle_job_message(message, remaining_ms)


def handle_job_message(body: dict[str, Any], remaining_ms: RemainingMs) -> None:
    store = JobStore()
    job = store.get(str(body.get("job_id", "")))
    if job is None:
        logger.warning("message for an unknown job, dropped", extra={"job_id": body.get("job_id")})
        return
    if job.terminal:
        ensure_manifest(job)
        return
    try:
        if job.status == "queued":
            _run(store, job, remaining_ms)
        elif not job.lease_expired():
            raise JobBusy(f"job {job.id} is running elsewhere until its lease ends")
        else:
            _recover_after_provider_call(store, job)
    except LeaseLost:
        # Someone else changed the job between our read and our write; their message carries it from here.
        logger.info("job moved on under us", extra={"job_id": job.id})


def handle_dead_letter(body: dict[str, Any]) -> None:
    """A message the jobs queue gave up on: its job must still end, and say why."""
    store = JobStore()
    job = store.get(str(body.get("job_id", "")))
    if job is None:
        return
    if not job.terminal:
        if job.status == "running" and not job.lease_expired():
            raise JobBusy(f"job {job.id} is still running; look again later")
        job = store.fail_abandoned(
            job, code="worker_failed", message="darkroom could not process this job after repeated attempts."
        )
        logger.error("dead-lettered job failed", extra={"job_id": job.id, "tenant": job.tenant})
    ensure_manifest(job)


def _run(store: JobStore, job: Job, remaining_ms: RemainingMs) -> None:
    provider = provider_for(job.model)
    provider.prepare()  # key and connection pool first: nothing slow may sit between the claim and the call
    job = store.claim(job, lease_s=remaining_ms() / 1000 + LEASE_MARGIN_S)
    timeout_s = min(settings().provider_timeout_s, remaining_ms() / 1000 - min(STORE_RESERVE_S, remaining_ms() / 4000))
    log = {"job_id": job.id, "tenant": job.tenant, "model": job.model, "attempt": job.provider_calls}
    started = time.monotonic()
    try:
        result = provider.generate(
            job.request, timeout_s=max(1.0, timeout_s), client_request_id=f"{job.id}:{job.provider_calls}"
        )
    except ProviderRateLimited as exc:
        _retry_rate_limited(store, job, exc)
        return
    except ProviderUnavailable as exc:
        _retry_unavailable(store, job, exc)
        return
    except (ProviderRefused, ProviderRejected, ProviderBadResponse) as exc:
        _fail(store, job, exc.code, exc.message)
        return
    latency_ms = round((time.monotonic() - started) * 1000)
    cost = pricing.cost_usd(job.model, result.usage)
    job = store.advance(job, phase="storing", usage=result.usage, cost_usd=cost)
    outputs = []
    for index, data in enumerate(result.images):
        try:
            info = images.inspect(data)
        except ProviderBadResponse as exc:
            _fail(store, job, exc.code, exc.message)
            return
        outputs.append(storage.put_output(job, index, data, info))
    job = store.finish(job, "succeeded", outputs=outputs)
    storage.write_manifest(job, manifest_document(job))
    metrics.add_metric(name="JobsSucceeded", unit="Count", value=1)
    metrics.add_metric(name="ProviderLatency", unit="Milliseconds", value=latency_ms)
    metrics.add_metric(name="ImagesGenerated", unit="Count", value=len(outputs))
    logger.info("job succeeded", extra={**log, "latency_ms": latency_ms, "cost_usd": str(cost), "images": len(outputs)})


def _recover_after_provider_call(store: JobStore, job: Job) -> None:
    """The previous owner died after starting a provider call. Never call again: finish from S3 or fail."""
    if job.phase == "storing":
        fmt = str(job.request.get("output_format", "png"))
        found = [storage.find_output(job, i, fmt) for i in range(int(job.request.get("n", 1)))]
        if all(found):
            job = _finish_abandoned(store, job, outputs=[f for f in found if f])
            storage.write_manifest(job, manifest_document(job))
            return
    job = store.fail_abandoned(
        job,
        code="interrupted",
        message="The worker stopped during this job after the provider was called; "
        "it is not retried so that it cannot be billed twice.",
    )
    logger.error("job interrupted mid-call", extra={"job_id": job.id, "tenant": job.tenant})
    ensure_manifest(job)


def _finish_abandoned(store: JobStore, job: Job, outputs: list[dict[str, Any]]) -> Job:
    job = store.take_over(job, LEASE_MARGIN_S)
    return store.finish(job, "succeeded", outputs=outputs)


def _retry_rate_limited(store: JobStore, job: Job, exc: ProviderRateLimited) -> None:
    s = settings()
    if job.rate_limits + 1 > s.rate_limit_max_requeues:
        _fail(store, job, "rate_limited", f"The provider kept rate-limiting this job ({job.rate_limits + 1} times).")
        return
    delay = exc.retry_after_s + random.uniform(0, 1)
    _requeue(store, job, delay, rate_limits=job.rate_limits + 1)


def _retry_unavailable(store: JobStore, job: Job, exc: ProviderUnavailable) -> None:
    s = settings()
    failures = job.transient_failures + 1
    if failures >= s.provider_max_attempts:
        _fail(store, job, exc.code, f"{exc.message} (gave up after {failures} attempts)")
        return
    delay = s.retry_base_delay_s * 2 ** (failures - 1) * random.uniform(1, 1.5)
    _requeue(store, job, delay, transient_failures=failures)


def _requeue(store: JobStore, job: Job, delay_s: float, **counters: int) -> None:
    delay = max(1, min(queue.MAX_DELAY_S, round(delay_s)))
    at = (datetime.now(UTC) + timedelta(seconds=delay)).isoformat(timespec="seconds").replace("+00:00", "Z")
    job = store.requeue(job, next_attempt_at=at, **counters)
    queue.send_job(job.id, job.tenant, delay_s=delay)
    metrics.add_metric(name="JobsRetried", unit="Count", value=1)
    logger.info("job requeued", extra={"job_id": job.id, "tenant": job.tenant, "delay_s": delay, **counters})


def _fail(store: JobStore, job: Job, code: str, message: str) -> None:
    job = store.finish(job, "failed", error={"code": code, "message": message})
    storage.write_manifest(job, manifest_document(job))
    metrics.add_metric(name="JobsFailed", unit="Count", value=1)
    logger.info("job failed", extra={"job_id": job.id, "tenant": job.tenant, "error_code": code})


def ensure_manifest(job: Job) -> None:
    if not storage.manifest_exists(job):
        storage.write_manifest(job, manifest_document(job))
