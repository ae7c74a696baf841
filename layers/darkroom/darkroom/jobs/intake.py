"""What the API does to jobs: accept them onto the queue, cancel them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from darkroom import queue, quotas, routing
from darkroom.edits import EditInput, store_inputs
from darkroom.errors import Conflict, DarkroomError, NotFound, ServiceUnavailable
from darkroom.ids import new_job_id, now_iso
from darkroom.jobs import executions, manifests
from darkroom.jobs.idempotency import IdempotencyKey, IdempotencyKeyInProgress
from darkroom.jobs.store import Job, JobStore, LeaseLost, TransactionConflict, batch_queue
from darkroom.models import EditRequest, GenerationRequest, UploadFiles
from darkroom.observability import logger
from darkroom.settings import settings


def submit_generation(
    tenant: str, request: GenerationRequest, idempotency: IdempotencyKey | None = None
) -> tuple[Job, bool]:
    """Record the job (with its idempotency key, in one transaction), then enqueue it. Returns the job and whether it
    is one an earlier request with the same key created (a replay).

    If recording or enqueueing fails, the record (and the key) is withdrawn and the client told to retry, so no job
    waits for a message that was never sent; unless a worker already has it (the message went out but its answer was
    lost), in which case it was accepted after all."""
    return _submit(new_job(tenant, request, kind="generate"), request, idempotency)


def submit_edit(
    tenant: str, request: EditRequest, found: list[EditInput], idempotency: IdempotencyKey | None = None
) -> tuple[Job, bool]:
    """An edit whose inputs were judged: they are stored under the job's inputs prefix first, then the job is
    submitted as a generation is. A replayed key stores nothing."""
    if idempotency is not None:
        replay = _replay_if_claimed(idempotency)
        if replay is not None:
            return replay, True
    roles = {found_input.role for found_input in found}
    job = new_job(tenant, request, kind="edit", mask="mask" in roles, markup="markup" in roles)
    admission = _admission(job, input_images=len(found))  # before storing anything
    job.inputs = store_inputs(tenant, job.id, found)
    return _submit(job, request, idempotency, admission)


def open_upload(
    tenant: str, request: EditRequest, files: UploadFiles, idempotency: IdempotencyKey | None = None
) -> tuple[Job, list[dict[str, Any]], bool]:
    """An edit that waits for its files (`awaiting_upload`), and one presigned POST per file. Nothing is queued:
    the last file's arrival does that (darkroom.uploads). A replay answers with fresh POSTs for the same job while
    it still waits."""
    from darkroom import uploads

    ttl_s = settings().upload_ttl_s
    store = JobStore()
    if idempotency is not None:
        replay = _replay_if_claimed(idempotency)
        if replay is not None:
            posts = uploads.presigned_posts(replay, ttl_s) if replay.status == "awaiting_upload" else []
            return replay, posts, True
    job = new_job(tenant, request, kind="edit", status="awaiting_upload", mask=files.mask, markup=files.markup)
    job.upload = {**files.model_dump(), "expires_at": uploads.expires_at(ttl_s)}
    admission = _admission(job, input_images=files.images)
    try:
        _create(store, job, idempotency, admission)
    except TransactionConflict as exc:
        if idempotency is None or not exc.failed[1]:
            raise
        replayed = _replayed(store, idempotency)
        return replayed, uploads.presigned_posts(replayed, ttl_s), True
    logger.info("upload opened", extra=accepted_log(job, request))
    return job, uploads.presigned_posts(job, ttl_s), False


def new_job(
    tenant: str,
    request: GenerationRequest,
    *,
    kind: str,
    status: str = "queued",
    mask: bool = False,
    markup: bool = False,
) -> Job:
    """The job a valid request becomes. Its routes are the ones that can honour the request, an edit's mask and
    markup included: the first serves it, the rest are its fallbacks."""
    now = now_iso()
    fields = {**request.route_fields(), "mask": mask or None, "markup": markup or None}
    route, *fallbacks = routing.routes_for(fields, request.provider, settings().routes)
    batch = request.tier == "batch"
    if batch and status == "queued":
        status = "batch_queued"  # the batcher sends it (darkroom.batches), not a worker message
    return Job(
        id=new_job_id(),
        tenant=tenant,
        kind=kind,
        status=status,
        tier="batch" if batch else "standard",
        batch_queue=batch_queue(request.model, kind) if status == "batch_queued" else None,
        request=request.provider_params(),  # exactly what the worker will send
        route=route,
        fallbacks=fallbacks,
        webhook_url=request.webhook_url,
        webhook_events=list(request.webhook_events) if request.webhook_events else None,
        cache=bool(request.cache),
        metadata=request.metadata or {},
        created_at=now,
        updated_at=now,
    )


@dataclass(frozen=True)
class Admission:
    """What the tenant's quotas say of a job about to be created: its limits and the reservation it makes."""

    limits: quotas.TenantLimits
    reservation: quotas.Reservation


def _admission(job: Job, input_images: int = 0) -> Admission:
    """The tenant's per-minute limit counts this submission (429 past it); the job's worst case is reserved with it."""
    limits = quotas.limits_for(job.tenant)
    quotas.admit_submission(job.tenant, limits)
    # Whichever of its routes serves it.
    batch = job.tier == "batch"
    worst = max(
        quotas.worst_case_usd(job.model, job.request, r, input_images, batch=batch) for r in (job.route, *job.fallbacks)
    )
    reservation = quotas.Reservation(quotas.month_of(), worst)
    if limits.monthly_budget_usd is not None and worst > limits.monthly_budget_usd:
        raise quotas.refusal(job.tenant, limits, reservation, [False, True])  # more than the whole budget
    job.quota = reservation.as_dict()
    return Admission(limits, reservation)


def _create(store: JobStore, job: Job, idempotency: IdempotencyKey | None, admission: Admission) -> None:
    """The job, its idempotency key and its admission to the tenant's quotas, in one transaction. A key already
    claimed is a TransactionConflict (the caller replays); a quota that refuses is its 429 or 402."""
    claim = [idempotency.put_item(job.id)] if idempotency else []
    admit = quotas.reserve_items(job.tenant, admission.limits, admission.reservation)
    try:
        store.create(job, together_with=[*claim, *admit])
    except TransactionConflict as exc:
        if (idempotency is not None and exc.failed[1]) or not any(exc.failed[-2:]):
            raise
        raise quotas.refusal(job.tenant, admission.limits, admission.reservation, exc.failed[-2:]) from None


def _submit(
    job: Job, request: GenerationRequest, idempotency: IdempotencyKey | None, admission: Admission | None = None
) -> tuple[Job, bool]:
    store = JobStore()
    admission = admission or _admission(job)
    try:
        _create(store, job, idempotency, admission)
        if job.status == "queued":
            queue.send_job(job.id, job.tenant, attempt=0)
    except TransactionConflict as exc:
        if idempotency is None or not exc.failed[1]:
            raise
        return _replayed(store, idempotency), True
    except DarkroomError:
        raise  # a quota refused the job: nothing was written
    except Exception:
        logger.exception("could not enqueue job", extra={"job_id": job.id, "tenant": job.tenant})
        _withdraw(store, job, idempotency, admission.reservation)
    else:
        if job.status == "queued":
            store.message_sent(job)  # if this write fails, the sweeper sends one harmless duplicate
    logger.info("job accepted", extra=accepted_log(job, request))
    return job, False


def accepted_log(job: Job, request: GenerationRequest) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "tenant": job.tenant,
        "kind": job.kind,
        "model": request.model,
        "route": job.route,
        "size": request.size,
        "quality": request.quality,
        "n": request.n,
        "images_in": len((job.inputs or {}).get("images", [])),
        # Never the prompt itself: its hash finds a job by prompt, its length tells a long prompt from a short.
        "prompt_sha256": hashlib.sha256(request.prompt.encode()).hexdigest()[:16],
        "prompt_chars": len(request.prompt),
    }


def _replay_if_claimed(idempotency: IdempotencyKey) -> Job | None:
    """The job an earlier request with this key made, if there is one: checked before storing any input."""
    if idempotency.claimed_job() is None:
        return None
    return _replayed(JobStore(), idempotency)


def _replayed(store: JobStore, idempotency: IdempotencyKey) -> Job:
    """The job an earlier request with this key created, as it is now; in progress while that request is still
    between writing the job and sending its message (or died there, until the sweeper sends it)."""
    job_id = idempotency.claimed_job()
    job = store.get_for_tenant(job_id, idempotency.tenant) if job_id else None
    if job is None or (job.status == "queued" and job.sweep_at is not None):
        raise IdempotencyKeyInProgress()
    logger.info("idempotent request replayed", extra={"job_id": job.id, "tenant": job.tenant})
    return job


def _withdraw(store: JobStore, job: Job, idempotency: IdempotencyKey | None, reservation: quotas.Reservation) -> None:
    """Take back a job whose submission failed half way, with its admission; returns only if a worker already
    has it."""
    release = [idempotency.delete_item(job.id)] if idempotency else []
    try:
        withdrawn = store.delete_unstarted(
            job.id, together_with=[*release, *quotas.release_items(job.tenant, reservation)]
        )
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
    # Twice at most: a queued job may become polling between the read and the write (a worker submitted it).
    for _ in range(2):
        if job.status == "canceled":
            manifests.ensure(store, job)  # an earlier cancel may have been cut off before its manifest
            return job
        if job.status not in ("queued", "polling", "awaiting_upload", "batch_queued") or (
            job.status == "batch_queued" and job.batch_id
        ):
            raise _not_cancelable(job)
        try:
            job = store.cancel(job, message=_cancel_message(job))
            break
        except LeaseLost:
            job = store.get(job_id) or job
    else:
        raise _not_cancelable(job)
    # A queued job's message is still on its way: the worker will see `canceled` and drop it. A polling job's
    # execution is stopped; if that fails, its next poll finds the job canceled and ends there.
    if job.prediction_id and not job.batch_id:  # a batch's poller follows the batch's other jobs too
        executions.stop(job.id, cause="canceled at the tenant's request")
    if job.upload and not job.inputs:
        from darkroom.uploads import delete_uploads

        delete_uploads(job)  # what arrived of an upload nobody waits for now
    manifests.publish(store, job)
    return job


CANCELED = "Canceled at the tenant's request."
# WaveSpeed, the one asynchronous provider, has no way to cancel a job it has taken.
CANCELED_WHILE_POLLING = (
    "Canceled at the tenant's request while the provider was working on it. The provider cannot be told to stop, "
    "so it may still charge for the job."
)


# OpenAI cancels whole batches only.
CANCELED_IN_BATCH = (
    "Canceled at the tenant's request after its batch was sent. OpenAI cancels whole batches only: darkroom cancels "
    "the batch once no job in it is still wanted; until then this job's request may still run and be billed."
)


def _cancel_message(job: Job) -> str:
    if job.status != "polling":
        return CANCELED
    return CANCELED_IN_BATCH if job.batch_id else CANCELED_WHILE_POLLING


def _not_cancelable(job: Job) -> Conflict:
    if job.status == "batch_queued":
        return Conflict(
            f"Job {job.id} is being sent in a batch and cannot be canceled until the batch is created; try again in a "
            "minute.",
            code="job_batching",
        )
    if job.status == "running":
        return Conflict(f"Job {job.id} is already running and cannot be canceled.", code="job_running")
    if not job.terminal:
        return Conflict(f"Job {job.id} changed while it was being canceled; try again.", code="job_changed")
    return Conflict(f"Job {job.id} has already ended ({job.status}).", code="job_finished")
