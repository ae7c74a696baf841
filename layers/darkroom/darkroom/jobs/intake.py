"""What the API does to jobs: accept them onto the queue, cancel them."""

from __future__ import annotations

from darkroom import queue, storage
from darkroom.errors import Conflict, NotFound, ServiceUnavailable
from darkroom.ids import new_job_id, now_iso
from darkroom.jobs.store import Job, JobStore, LeaseLost
from darkroom.jobs.views import manifest_document
from darkroom.models import GenerationRequest
from darkroom.observability import logger


def submit_generation(tenant: str, request: GenerationRequest) -> Job:
    """Record the job, then enqueue it. If either step fails, the record is withdrawn and the client told to retry,
    so no job waits for a message that was never sent; unless a worker already has it (the message went out but its
    answer was lost), in which case it was accepted after all."""
    now = now_iso()
    job = Job(
        id=new_job_id(),
        tenant=tenant,
        kind="generate",
        status="queued",
        request=request.provider_params(),  # exactly what the worker will send
        webhook_url=request.webhook_url,
        metadata=request.metadata or {},
        created_at=now,
        updated_at=now,
    )
    store = JobStore()
    try:
        store.create(job)
        queue.send_job(job.id, tenant, attempt=0)
    except Exception:
        logger.exception("could not enqueue job", extra={"job_id": job.id, "tenant": tenant})
        _withdraw(store, job)
    logger.info(
        "job accepted",
        extra={
            "job_id": job.id,
            "tenant": tenant,
            "model": request.model,
            "size": request.size,
            "quality": request.quality,
            "n": request.n,
        },
    )
    return job


def _withdraw(store: JobStore, job: Job) -> None:
    """Take back a job whose submission failed half way; returns only if a worker already has it."""
    try:
        withdrawn = store.delete_unstarted(job.id)
    except Exception:
        logger.exception("could not withdraw job", extra={"job_id": job.id, "tenant": job.tenant})
        raise ServiceUnavailable(
            f"darkroom could not confirm job {job.id}; check GET /v1/jobs before submitting again."
        ) from None
    if withdrawn:
        raise ServiceUnavailable("The job could not be queued; nothing was started. Try again.")


def cancel_job(tenant: str, job_id: str) -> Job:
    store = JobStore()
    job = store.get_for_tenant(job_id, tenant)
    if job is None:
        raise NotFound(f"No job {job_id}.")
    if job.status == "canceled":
        return job
    if job.status != "queued":
        raise _not_cancelable(job)
    try:
        job = store.cancel(job)
    except LeaseLost:
        latest = store.get(job_id) or job
        if latest.status == "canceled":
            return latest
        raise _not_cancelable(latest) from None
    # The queued message is still on its way; the worker will see `canceled` and drop it.
    storage.write_manifest(job, manifest_document(job))
    return job


def _not_cancelable(job: Job) -> Conflict:
    if job.status == "running":
        return Conflict(f"Job {job.id} is already running and cannot be canceled.", code="job_running")
    return Conflict(f"Job {job.id} has already ended ({job.status}).", code="job_finished")
