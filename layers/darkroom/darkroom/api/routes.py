"""darkroom's HTTP API: OpenAI-shaped requests in, jobs out."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

from darkroom.api.http import Request, Response, Router
from darkroom.errors import BodyTooLarge, Conflict, FieldError, NotFound, ValidationFailed
from darkroom.jobs import idempotency
from darkroom.jobs.intake import cancel_job, submit_generation
from darkroom.jobs.store import STATUSES, Job, JobStore, cursor_after
from darkroom.jobs.views import job_document, job_summary
from darkroom.jobs.waiting import requested_wait, wait_for_end
from darkroom.models import parse_generation_request, parse_upload_request, upload_files
from darkroom.observability import logger, metrics
from darkroom.settings import settings
from darkroom.tenants import tenant_for_authorization

MAX_PAGE = 100
# Lambda answers at most 6 MB; a page stops short of that whatever its jobs hold.
PAGE_BUDGET_BYTES = 4_000_000
# Lambda takes an event of at most 6 MB, and a binary body arrives base64-encoded in it: 4 MB of body fits.
INLINE_EDIT_LIMIT = 4 * 1024 * 1024


def _authenticate(request: Request) -> str:
    return tenant_for_authorization(request.headers.get("authorization"))


router = Router(_authenticate)


def handle(event: dict[str, Any]) -> dict[str, Any]:
    return router.resolve(event)


@router.route("GET", "/health", summary="Liveness; needs no key.", public=True)
def health(request: Request) -> Response:
    return Response(200, {"status": "ok"})


@router.route("GET", "/", summary="The playground: a page to try darkroom with a key.", public=True)
def playground(request: Request) -> Response:
    from darkroom.api.playground import page

    return page()


@router.route("GET", "/v1/models", summary="The models darkroom takes and what each allows (OpenAI's list shape).")
def list_models(request: Request) -> Response:
    from darkroom.catalog import describe_models

    return Response(200, {"object": "list", "data": describe_models()})


@router.route("GET", "/openapi.json", summary="This API's OpenAPI 3.1 document.", public=True)
def openapi(request: Request) -> Response:
    from darkroom.api.openapi import openapi_document

    return Response(200, openapi_document(router))


@router.route("POST", "/v1/images/generations", summary="Queue an image generation job.")
def create_generation(request: Request) -> Response:
    wait_s = requested_wait(request.headers)
    body = request.json()
    generation = parse_generation_request(body, **settings().request_rules())
    key = idempotency.from_request(request.tenant, request.headers, "generations", body)  # of a body known valid
    return _accepted(request, wait_s, *submit_generation(request.tenant, generation, key))


def _accepted(request: Request, wait_s: int, job: Job, replayed: bool) -> Response:
    """202 with the job; or, when the client prefers to wait and the job ends in time, the ended job as OpenAI
    answers (darkroom.api.openai_answers)."""
    headers = {"location": f"/v1/jobs/{job.id}", "darkroom-job-id": job.id}
    if replayed:
        headers["idempotent-replayed"] = "true"
    else:
        metrics.add_metric(name="JobsAccepted", unit="Count", value=1)
    if wait_s and job.tier != "batch":  # a batch job ends within a day, not within a request
        job, answer = _waited(request, wait_s, job, headers)
        if answer is not None:
            return answer
    return Response(202, job_document(job, with_urls=False, base_url=request.base_url), headers)


def _waited(request: Request, wait_s: int, job: Job, headers: dict[str, str]) -> tuple[Job, Response | None]:
    """The job after waiting for it (when the tenant has a wait slot free), and OpenAI's answer once it has ended.
    The job is accepted by now: anything failing here leaves the 202, never a 5xx that invites a second submit."""
    from darkroom import quotas
    from darkroom.api.openai_answers import ended_job_answer

    with quotas.wait_slot(request.tenant, wait_s, holder=request.request_id or job.id) as held:
        if not held:
            metrics.add_metric(name="WaitsRefused", unit="Count", value=1)
            return job, None
        headers["preference-applied"] = f"wait={wait_s}"
        job = wait_for_end(JobStore(), job, wait_s - request.elapsed_s())
    if not job.terminal:
        return job, None
    try:
        return job, ended_job_answer(job, headers)
    except Exception:
        logger.warning("the ended job could not be answered as OpenAI does; answering 202", exc_info=True)
        return job, None


@router.route(
    "POST", "/v1/images/edits", summary="Queue an image edit job: multipart as the openai SDK sends it, or JSON."
)
def create_edit(request: Request) -> Response:
    from darkroom import edits
    from darkroom.jobs.intake import submit_edit
    from darkroom.models import parse_edit_request

    wait_s = requested_wait(request.headers)
    if len(request.body) > INLINE_EDIT_LIMIT:
        raise BodyTooLarge(
            f"An edit's body may carry at most {INLINE_EDIT_LIMIT // (1024 * 1024)} MB here; send larger images "
            "through POST /v1/uploads, which returns presigned uploads straight to storage."
        )
    rules = settings().request_rules()
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() == "multipart/form-data":
        from darkroom.api.forms import parse_form

        form = parse_form(content_type, request.body)
        counts = {name: len(parts) for name, parts in form.files.items()}
        edit = parse_edit_request(form.fields, files=counts, **rules)
        found = edits.inputs_of_form(form.files)
        fields: Any = form.fields
    else:
        body = request.json()
        edit = parse_edit_request(body, **rules)
        found = edits.inputs_of_json(request.tenant, edit)
        fields = {k: v for k, v in body.items() if k not in ("images", "mask", "markup")}
    errors = edits.judge(found)
    if errors:
        raise ValidationFailed(errors)
    # The same key and the same fields and files is the same edit, whichever form carried it.
    fingerprint = {"fields": fields, "inputs": edits.fingerprint(found)}
    key = idempotency.from_request(request.tenant, request.headers, "edits", fingerprint)
    return _accepted(request, wait_s, *submit_edit(request.tenant, edit, found, key))


@router.route("POST", "/v1/uploads", summary="An edit whose files are uploaded straight to storage: presigned POSTs.")
def create_upload(request: Request) -> Response:
    from darkroom.jobs.intake import open_upload

    body = request.json()
    s = settings()
    wanted = upload_files(body)
    edit = parse_upload_request(body, wanted, **s.request_rules())
    key = idempotency.from_request(request.tenant, request.headers, "uploads", body)
    job, posts, replayed = open_upload(request.tenant, edit, wanted, key)
    headers = {"location": f"/v1/jobs/{job.id}"}
    if replayed:
        headers["idempotent-replayed"] = "true"
    document = {
        **job_document(job, with_urls=False, base_url=request.base_url),
        "uploads": posts,
        "uploads_expire_in": s.upload_ttl_s,
    }
    return Response(201, document, headers)


@router.route("GET", "/v1/jobs/{id}", summary="A job, with download URLs for its outputs.")
def get_job(request: Request) -> Response:
    job = JobStore().get_for_tenant(request.path_params["id"], request.tenant)
    if job is None:
        raise NotFound(f"No job {request.path_params['id']}.")
    return Response(200, job_document(job, with_urls=True, base_url=request.base_url, batch=_batch_of(job)))


def _batch_of(job: Job) -> dict[str, Any] | None:
    """What a batch-tier job's batch says of itself; None when it has none, or it cannot be read (the job still
    answers)."""
    if not job.batch_id:
        return None
    from darkroom.batches.records import BatchStore

    try:
        record = BatchStore().get(job.batch_id)
    except Exception:
        logger.warning("could not read a job's batch", exc_info=True, extra={"job_id": job.id})
        return None
    return record.public() if record and record.tenant == job.tenant else None


@router.route("GET", "/v1/jobs", summary="The tenant's jobs, newest first.")
def list_jobs(request: Request) -> Response:
    status = request.query.get("status") or None
    errors = []
    if status is not None and status not in STATUSES:
        errors.append(FieldError("status", "enum", f"status must be one of {', '.join(STATUSES)}."))
    limit_text = request.query.get("limit", "20")
    # ASCII digits only, and few of them: "²".isdigit() is true and int() of 5000 digits raises.
    limit = int(limit_text) if limit_text.isascii() and limit_text.isdecimal() and len(limit_text) <= 3 else 0
    if not 1 <= limit <= MAX_PAGE:
        errors.append(FieldError("limit", "range", f"limit must be a whole number from 1 to {MAX_PAGE}."))
    if errors:
        raise ValidationFailed(errors)
    jobs, next_cursor = JobStore().list_for_tenant(
        request.tenant, status=status, limit=limit, cursor=request.query.get("cursor") or None
    )
    data, next_cursor = _within_page_budget(jobs, next_cursor, request.base_url)
    return Response(
        200, {"object": "list", "data": data, "has_more": next_cursor is not None, "next_cursor": next_cursor}
    )


def _within_page_budget(
    jobs: list[Job], next_cursor: str | None, base_url: str
) -> tuple[list[dict[str, Any]], str | None]:
    """Summaries up to PAGE_BUDGET_BYTES; a page cut short continues after its last job."""
    data: list[dict[str, Any]] = []
    size = 0
    for job in jobs:
        summary = job_summary(job, base_url=base_url)
        size += len(json.dumps(summary, ensure_ascii=False).encode())
        if data and size > PAGE_BUDGET_BYTES:
            return data, cursor_after(jobs[len(data) - 1])
        data.append(summary)
    return data, next_cursor


@router.route("GET", "/v1/usage", summary="The tenant's jobs, images, tokens and cost by day or model; its budget.")
def get_usage(request: Request) -> Response:
    from darkroom import usage

    today = datetime.now(UTC).date()
    errors: list[FieldError] = []
    start = _date_param(request, "from", today.replace(day=1), errors)
    end = _date_param(request, "to", today, errors)
    group_by = request.query.get("group_by", "day")
    if group_by not in ("day", "model"):
        errors.append(FieldError("group_by", "enum", "group_by must be day or model."))
    if start and end and start > end:
        # Name the field the client sent: a `to` before this month's first day meets the default `from`.
        blamed = "from" if "from" in request.query or "to" not in request.query else "to"
        errors.append(FieldError(blamed, "order", "from must be on or before to."))
    elif start and end and (end - start).days >= usage.MAX_DAYS:
        errors.append(FieldError("to", "range", f"from and to may be at most {usage.MAX_DAYS} days apart."))
    if errors or start is None or end is None:
        raise ValidationFailed(errors)
    return Response(200, usage.report(request.tenant, start, end, group_by))


def _date_param(request: Request, name: str, default: date, errors: list[FieldError]) -> date | None:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        errors.append(FieldError(name, "date", f"{name} must be a date as YYYY-MM-DD (UTC)."))
        return None


@router.route("DELETE", "/v1/jobs/{id}", summary="Cancel a queued job, or one a provider is working on.")
def delete_job(request: Request) -> Response:
    job = cancel_job(request.tenant, request.path_params["id"])
    return Response(200, job_document(job, with_urls=False, base_url=request.base_url))


# Webhooks: where a tenant's events go, and the secrets that sign them.


def _webhooks() -> Any:
    from darkroom.webhooks.endpoints import WebhookStore  # only the webhook routes pay for it

    return WebhookStore()


@router.route("POST", "/v1/webhooks/endpoints", summary="Register a webhook endpoint; its secret is in the answer.")
def create_webhook_endpoint(request: Request) -> Response:
    from darkroom.webhooks.endpoints import MAX_ENDPOINTS, TooManyEndpoints
    from darkroom.webhooks.requests import parse_webhook_endpoint

    s = settings()
    wanted = parse_webhook_endpoint(
        request.json(), allow_http=s.allow_http_webhooks, allow_private=s.allow_private_webhooks
    )
    try:
        endpoint, secret = _webhooks().create_endpoint(
            request.tenant,
            url=wanted.url,
            events=list(wanted.events),
            description=wanted.description,
            enabled=wanted.enabled,
        )
    except TooManyEndpoints:
        raise Conflict(
            f"A tenant may register {MAX_ENDPOINTS} endpoints; delete one first.", code="too_many_endpoints"
        ) from None
    return Response(201, {**endpoint.public(), "secret": secret})


@router.route("GET", "/v1/webhooks/endpoints", summary="The tenant's webhook endpoints (never their secrets).")
def list_webhook_endpoints(request: Request) -> Response:
    endpoints = [endpoint.public() for endpoint in _webhooks().list_endpoints(request.tenant)]
    return Response(200, {"object": "list", "data": endpoints})


@router.route("GET", "/v1/webhooks/endpoints/{id}", summary="One webhook endpoint.")
def get_webhook_endpoint(request: Request) -> Response:
    return Response(200, _webhooks().get_endpoint(request.tenant, request.path_params["id"]).public())


@router.route("PATCH", "/v1/webhooks/endpoints/{id}", summary="Change an endpoint; enabled: true turns it back on.")
def update_webhook_endpoint(request: Request) -> Response:
    from darkroom.webhooks.requests import parse_webhook_endpoint_update

    s = settings()
    update = parse_webhook_endpoint_update(
        request.json(), allow_http=s.allow_http_webhooks, allow_private=s.allow_private_webhooks
    )
    changes = update.model_dump(exclude_none=True)
    endpoint = _webhooks().update_endpoint(request.tenant, request.path_params["id"], changes)
    return Response(200, endpoint.public())


@router.route("DELETE", "/v1/webhooks/endpoints/{id}", summary="Stop sending to a webhook endpoint.")
def delete_webhook_endpoint(request: Request) -> Response:
    _webhooks().delete_endpoint(request.tenant, request.path_params["id"])
    return Response(200, {"id": request.path_params["id"], "object": "webhook_endpoint", "deleted": True})


@router.route("GET", "/v1/webhooks/endpoints/{id}/secret", summary="An endpoint's signing secrets, newest first.")
def get_webhook_endpoint_secret(request: Request) -> Response:
    store = _webhooks()
    secrets = store.endpoint_secrets(store.get_endpoint(request.tenant, request.path_params["id"]))
    return Response(200, {"secret": secrets[0], "valid_secrets": secrets})


@router.route("POST", "/v1/webhooks/endpoints/{id}/rotate", summary="A new secret; the old one signs for 24 h more.")
def rotate_webhook_endpoint_secret(request: Request) -> Response:
    with _one_rotation():
        return Response(200, {"secret": _webhooks().rotate_endpoint(request.tenant, request.path_params["id"])})


@router.route("GET", "/v1/webhooks/secret", summary="The secret that signs deliveries to jobs' own webhook_url.")
def get_tenant_webhook_secret(request: Request) -> Response:
    secrets = _webhooks().tenant_secrets(request.tenant)
    return Response(200, {"secret": secrets[0], "valid_secrets": secrets})


@router.route("POST", "/v1/webhooks/secret/rotate", summary="A new tenant secret; the old one signs for 24 h more.")
def rotate_tenant_webhook_secret(request: Request) -> Response:
    with _one_rotation():
        return Response(200, {"secret": _webhooks().rotate_tenant_secret(request.tenant)})


@contextlib.contextmanager
def _one_rotation() -> Iterator[None]:
    from darkroom.webhooks.endpoints import RotationConflict

    try:
        yield
    except RotationConflict:
        raise Conflict(
            "Another rotation of this secret finished first; read it, then rotate again if needed.",
            code="rotation_conflict",
        ) from None


@router.route("GET", "/v1/jobs/{id}/deliveries", summary="Every webhook delivery of a job, with each attempt.")
def list_job_deliveries(request: Request) -> Response:
    from darkroom.webhooks.notify import DeliveryStore

    job = _own_job(request)
    return Response(200, {"object": "list", "data": DeliveryStore().for_job(job.id)})


@router.route("POST", "/v1/jobs/{id}/deliveries/redeliver", summary="Send a job's event again, same webhook-id.")
def redeliver_job_event(request: Request) -> Response:
    from darkroom.webhooks.notify import redeliver

    job = _own_job(request)
    return Response(202, {"job_id": job.id, "redelivering_to": redeliver(job.id)})


def _own_job(request: Request) -> Job:
    job = JobStore().get_for_tenant(request.path_params["id"], request.tenant)
    if job is None:
        raise NotFound(f"No job {request.path_params['id']}.")
    return job
