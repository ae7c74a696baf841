"""The job as clients see it: in API answers (with fresh download URLs) and in result manifests (without)."""

from __future__ import annotations

from typing import Any

from darkroom import ledger, storage
from darkroom.jobs.store import Job

# A list shows this much of each prompt; GET /v1/jobs/{id} shows all of it.
PROMPT_PREVIEW_CHARS = 200


def job_document(
    job: Job, *, with_urls: bool, base_url: str = "", batch: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`with_urls`: presigned download URLs for the outputs. `base_url`: the API's address, which the job's own
    links (`urls`) start with; stored documents (manifests, webhooks) have none, so their links are paths. `batch`:
    what the job's batch says of itself (its id, status and counts), for a batch-tier job."""
    outputs = []
    for output in job.outputs:
        entry = {k: output[k] for k in ("format", "width", "height", "bytes")}
        entry["key"] = output["key"]
        if with_urls:
            entry["url"] = storage.presign(output["key"])
        outputs.append(entry)
    return {
        "id": job.id,
        "object": "image.job",
        "kind": job.kind,
        "status": job.status,
        "model": job.model,
        "request": job.request,
        "inputs": job.inputs,
        "upload": job.upload,
        "outputs": outputs,
        "progress": progress(job, with_urls=with_urls),
        "usage": job.usage,
        "cost_usd": float(job.cost_usd) if job.cost_usd is not None else None,
        "cost": cost(job),
        "error": job.error,
        "attempts": job.provider_calls,
        # Which provider route runs the job and, on an asynchronous one, the provider's own id and last status; the
        # routes it may still move to, and the ones it left (each with why).
        "provider": {
            "route": job.route,
            "job_id": job.prediction_id,
            "status": job.provider_status,
            "fallbacks": job.fallbacks,
            "tried": job.routes_tried,
            "tier": job.tier,
            **({"batch": batch or {"id": job.batch_id}} if job.batch_id else {}),
        },
        # The job whose images a cached job reused (darkroom.jobs.cache).
        "cached_from": job.cached_from,
        "webhook_url": job.webhook_url,
        "webhook_events": job.webhook_events,
        "metadata": job.metadata,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "next_attempt_at": job.next_attempt_at,
        "urls": job_links(job, base_url),
    }


def cost(job: Job) -> dict[str, Any]:
    """What the job cost: at the provider (from its usage; None until priced) and in AWS so far (darkroom.ledger),
    with what the AWS figure is made of."""
    return {
        "provider_usd": float(job.cost_usd) if job.cost_usd is not None else None,
        "aws_usd": float(job.aws_usd()),
        "aws": {"usage": {name: job.aws.get(name, 0) for name in ledger.COUNTERS}, "prices_as_of": ledger.PRICES.as_of},
    }


def progress(job: Job, *, with_urls: bool) -> dict[str, Any] | None:
    """The previews asked for (`partial_images`) and those stored so far, in order; None when none were asked for."""
    asked = int(job.request.get("partial_images") or 0)
    if not asked:
        return None
    previews = []
    for preview in sorted(job.previews, key=lambda p: int(p.get("index", 0))):
        entry = {k: preview.get(k) for k in ("index", "format", "width", "height", "bytes", "key", "created_at")}
        if with_urls:
            entry["url"] = storage.presign(preview["key"])
        previews.append(entry)
    return {"partial_images": asked, "previews": previews}


def progress_document(job: Job, preview: dict[str, Any]) -> dict[str, Any]:
    """What announces one preview (storage.write_progress): the `job.progress` event's facts, and whom to tell."""
    return {
        "id": job.id,
        "tenant": job.tenant,
        "status": job.status,
        "model": job.model,
        "metadata": job.metadata,
        "webhook_url": job.webhook_url,
        "webhook_events": job.webhook_events,
        "created_at": job.created_at,
        "partial_images": int(job.request.get("partial_images") or 0),
        "preview": preview,
    }


def job_links(job: Job, base_url: str = "") -> dict[str, str]:
    """Where to read the job, cancel it while it can be, and, once it has ended, see its webhook deliveries."""
    get = f"{base_url}/v1/jobs/{job.id}"
    links = {"get": get}
    if job.terminal:
        links["deliveries"] = f"{get}/deliveries"
    else:
        links["cancel"] = get
    return links


def manifest_document(job: Job) -> dict[str, Any]:
    return {**job_document(job, with_urls=False), "tenant": job.tenant}


def job_summary(job: Job, *, base_url: str = "") -> dict[str, Any]:
    """The job as a list shows it: everything but the full prompt, which can be 32,000 characters (128 KB)."""
    document = job_document(job, with_urls=False, base_url=base_url)
    prompt = str(job.request.get("prompt", ""))
    if len(prompt) > PROMPT_PREVIEW_CHARS:
        document["request"] = {**job.request, "prompt": prompt[:PROMPT_PREVIEW_CHARS]}
        document["prompt_truncated"] = True
    document["cost"] = ledger.brief(document["cost"])
    return document
