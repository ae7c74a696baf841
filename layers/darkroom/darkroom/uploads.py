"""Edits whose files go straight to S3: uploads a job waits for, and files other systems drop into the bucket.

Everything under `uploads/{tenant}/` belongs to that tenant; S3 tells the uploads queue of each object created there.
- `uploads/{tenant}/jobs/{job}/image-{i}` and `.../mask`: the files of a job made by POST /v1/uploads. When the last
  expected file has landed, every file is judged again from its bytes (in AWS the POST policy limits size and type,
  but nothing relies on it alone, and moto checks none of it), copied to the job's inputs, and the job is queued. A
  file that breaks a rule fails the job (`input_invalid`). Files that never all arrive: the sweeper fails the job as
  `upload_expired` after its expiry and deletes what did arrive.
- `uploads/{tenant}/drop/...`: an image put with `x-amz-meta-prompt` (and optional `model`, `size`, `quality`,
  `output-format`, `webhook-url`, `metadata-*`) becomes an edit of that image; a `*.edit.json` request file names
  images, a mask and parameters in the same prefix. The answer is written next to it as `<name>.job.json` (for
  `look.edit.json`, `look.job.json`): the job's
  id, or the error. A duplicate S3 event finds the same job again (an idempotency key of the object's key and ETag).
Anything else under `uploads/` (a tenant's library of files that edits name) triggers nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from darkroom import aws, catalog, edits, queue
from darkroom.errors import DarkroomError, FieldError, ServiceUnavailable, ValidationFailed
from darkroom.jobs import manifests
from darkroom.jobs.idempotency import IdempotencyKey, IdempotencyKeyInProgress
from darkroom.jobs.store import Job, JobStore, LeaseLost
from darkroom.models import EditRequest, parse_edit_request
from darkroom.observability import logger
from darkroom.settings import settings
from darkroom.tenants import TENANT_PATTERN

# An upload that started just before its POST expired may still be arriving: the job waits this much longer.
UPLOAD_GRACE_S = 600
# After the sweeper re-sends a complete upload's event: the uploads queue's visibility timeout, and a margin.
RENOTIFY_AFTER_S = 2000
JOB_ID = re.compile(r"job_[0-9a-z]{26}")
# S3 keys are at most 1,024 bytes: an answer that would not fit is not written (the job still runs).
MAX_KEY_BYTES = 1024
REQUEST_FILE_LIMIT = 64 * 1024
REQUEST_SUFFIX = ".edit.json"
ANSWER_SUFFIX = ".job.json"
# Drop-in metadata (x-amz-meta-*) -> the request field it sets.
DROP_FIELDS = {
    "model": "model",
    "size": "size",
    "quality": "quality",
    "output-format": "output_format",
    "webhook-url": "webhook_url",
    "background": "background",
    "input-fidelity": "input_fidelity",
}


def upload_prefix(job: Job) -> str:
    return f"uploads/{job.tenant}/jobs/{job.id}/"


def expected_files(job: Job) -> dict[str, str]:
    """File name under the job's upload prefix -> its form field, for every file the job waits for."""
    wanted = job.upload or {}
    files = {f"image-{i}": f"image[{i}]" for i in range(int(wanted.get("images", 0)))}
    files.update({role: role for role in ("mask", "markup") if wanted.get(role)})
    return files


def expires_at(ttl_s: int) -> float:
    return time.time() + ttl_s + UPLOAD_GRACE_S


def presigned_posts(job: Job, ttl_s: int) -> list[dict[str, Any]]:
    """One presigned POST per expected file: its key fixed under the tenant's prefix, its size and type limited."""
    s3 = aws.client("s3")
    posts = []
    for name, field in expected_files(job).items():
        limit = (catalog.MAX_MASK_BYTES if name == "mask" else catalog.MAX_INPUT_IMAGE_BYTES) - 1
        post = s3.generate_presigned_post(
            Bucket=settings().outputs_bucket,
            Key=upload_prefix(job) + name,
            Conditions=[["content-length-range", 1, limit], ["starts-with", "$Content-Type", "image/"]],
            ExpiresIn=ttl_s,
        )
        posts.append({"field": field, "url": post["url"], "fields": post["fields"], "max_bytes": limit})
    return posts


# S3 events from the uploads queue


def handle_queue_record(body: str) -> None:
    """One SQS message: an S3 event (or S3's test event, which has no records)."""
    try:
        event = json.loads(body)
    except ValueError:
        logger.error("unreadable uploads message dropped", extra={"body": body[:500]})
        return
    for record in event.get("Records", []) if isinstance(event, dict) else []:
        key = unquote_plus(str(record.get("s3", {}).get("object", {}).get("key", "")))
        try:
            handle_object(key)
        except Exception:
            # A failed record is logged at debug level only (darkroom.sqs_batches): this one must reach operators.
            logger.exception("upload event failed", extra={"key": key})
            raise


def handle_object(key: str) -> None:
    parts = key.split("/")
    if len(parts) < 4 or parts[0] != "uploads" or not TENANT_PATTERN.fullmatch(parts[1]):
        return
    tenant = parts[1]
    if parts[2] == "jobs" and len(parts) == 5:
        file_landed(tenant, parts[3])
    elif parts[2] == "drop" and not key.endswith(ANSWER_SUFFIX):
        dropped(tenant, key)


def file_landed(tenant: str, job_id: str) -> None:
    """A file of an upload job arrived: once all have, judge them and queue the job (or fail it)."""
    store = JobStore()
    job = store.get_for_tenant(job_id, tenant) if JOB_ID.fullmatch(job_id) else None
    if job is None or job.upload is None:
        return  # not an upload job's folder: a tenant's own files, which trigger nothing
    if job.status != "awaiting_upload":
        # Canceled, or taken by an earlier event: nothing waits for its files (a presigned POST still accepts
        # files until it expires). Only the names the job's POSTs allow are removed.
        _delete_names(upload_prefix(job), list(expected_files(job)))
        return
    complete(store, job)


def complete(store: JobStore, job: Job) -> bool:
    """Judge, store and queue an upload job once every expected file is there; False while some are missing."""
    arrived = _listed(upload_prefix(job))
    expected = expected_files(job)
    if not set(expected) <= set(arrived):
        return False  # the last file's event will complete it
    found, errors = [], []
    for name, field in expected.items():
        role = "image" if name.startswith("image-") else name
        etag, size = arrived[name]
        found.append(edits.EditInput(role, field, source_key=upload_prefix(job) + name, source_etag=etag))
        # Sizes from the listing, before a byte is read: the POST policy limits them in AWS, but not alone.
        if size >= _limit(role):
            message = f"The {role} must be under {_limit(role) // (1024 * 1024)} MB."
            errors.append(FieldError(field, "image_too_large", message))
    errors = errors or edits.judge(found)
    if errors:
        _fail(store, job, errors)
        return True
    try:
        inputs = edits.store_inputs(job.tenant, job.id, found)
        job = store.uploads_complete(job, inputs=inputs)
    except ValidationFailed as exc:  # a file was replaced while it was judged
        _fail(store, job, exc.errors)
        return True
    except LeaseLost:
        return True  # another event for this job queued it first
    if job.status == "queued":  # a batch-tier job waits for the batcher instead
        queue.send_job(job.id, job.tenant, attempt=0)
        store.message_sent(job)  # if this fails, the sweeper sends one harmless duplicate
    delete_uploads(job)
    logger.info("uploaded edit queued", extra={"job_id": job.id, "tenant": job.tenant, "files": len(found)})
    return True


def _limit(role: str) -> int:
    return catalog.MAX_MASK_BYTES if role == "mask" else catalog.MAX_INPUT_IMAGE_BYTES


def _fail(store: JobStore, job: Job, errors: list[FieldError]) -> None:
    message = "; ".join(f"{e.field}: {e.message} ({e.rule})" for e in errors)
    try:
        job = store.fail_waiting(job, code="input_invalid", message=message)
    except LeaseLost:
        return
    manifests.publish(store, job)
    delete_uploads(job)
    logger.info(
        "uploaded edit refused", extra={"job_id": job.id, "tenant": job.tenant, "rules": [e.rule for e in errors]}
    )


def expire(store: JobStore, job: Job) -> str:
    """The sweeper's verdict on an upload job past its expiry: `expired` when files are missing (it fails, and what
    came is deleted); `renotified` when every file did arrive but its event failed or waits in a backlog. Judging
    files is the uploads function's work, with its memory and time: the sweeper sends it the event again, and looks
    at the job once more only after the queue's visibility timeout."""
    if set(expected_files(job)) <= set(_listed(upload_prefix(job))):
        last_file = upload_prefix(job) + list(expected_files(job))[-1]
        aws.client("sqs").send_message(
            QueueUrl=settings().uploads_queue_url,
            MessageBody=json.dumps({"Records": [{"s3": {"object": {"key": quote_plus(last_file)}}}]}),
        )
        store.sweep_again_at(job, time.time() + RENOTIFY_AFTER_S)
        return "renotified"
    job = store.fail_waiting(
        job,
        code="upload_expired",
        message="Not every expected file was uploaded before the uploads expired; create the upload again.",
    )
    delete_uploads(job)
    manifests.publish(store, job)
    return "expired"


def delete_uploads(job: Job) -> None:
    """The job's uploaded files: copied to its inputs, refused, expired or canceled."""
    _delete_prefix(upload_prefix(job))


def _delete_prefix(prefix: str) -> None:
    _delete_names(prefix, list(_listed(prefix)))


def _delete_names(prefix: str, names: list[str]) -> None:
    """Best effort: the bucket's lifecycle removes what this misses."""
    try:
        if names:
            aws.client("s3").delete_objects(
                Bucket=settings().outputs_bucket,
                Delete={"Objects": [{"Key": prefix + name} for name in names], "Quiet": True},
            )
    except Exception:
        logger.warning("could not delete uploaded files", extra={"prefix": prefix}, exc_info=True)


def _listed(prefix: str) -> dict[str, tuple[str, int]]:
    """Names under a prefix -> (ETag, size)."""
    listed = aws.client("s3").list_objects_v2(Bucket=settings().outputs_bucket, Prefix=prefix)
    return {item["Key"][len(prefix) :]: (item["ETag"], item["Size"]) for item in listed.get("Contents", [])}


# Drop-ins


def dropped(tenant: str, key: str) -> None:
    """An object under the tenant's drop prefix: an image with a prompt, or a request file, becomes an edit job."""
    s3 = aws.client("s3")
    bucket = settings().outputs_bucket
    drop = f"uploads/{tenant}/drop/"
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if aws.error_code(exc) in ("404", "NoSuchKey", "403"):
            return  # gone already
        raise
    body: dict[str, Any] | None
    if key.endswith(REQUEST_SUFFIX):
        answer_key = key[: -len(REQUEST_SUFFIX)] + ANSWER_SUFFIX
        try:
            body = _request_file(key, drop)
        except DarkroomError as exc:
            _answer(answer_key, exc.body())
            return
    else:
        body = _request_of_metadata(head.get("Metadata", {}), key[len("uploads/") + len(tenant) + 1 :])
        if body is None:
            return  # an image without a prompt: a request file will name it
        answer_key = key + ANSWER_SUFFIX  # photo.png.job.json: photo.png and photo.webp answer apart
    # The object's key, bytes and request identify the drop: a duplicate event finds the job the first one made,
    # and the same bytes put again with other metadata are another edit (never a key "reused" nobody sent).
    fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode(errors="surrogatepass")).hexdigest()
    idempotency = IdempotencyKey(tenant, f"drop:{key}:{head['ETag']}:{fingerprint}", fingerprint)
    try:
        job = _submit(tenant, body, idempotency)
    except (ServiceUnavailable, IdempotencyKeyInProgress):
        raise  # not an answer: the event comes back and is tried again
    except DarkroomError as exc:
        _answer(answer_key, exc.body())
        logger.info("dropped edit refused", extra={"tenant": tenant, "code": exc.code})
        return
    _answer(answer_key, {"job_id": job.id, "status": job.status, "job_url": f"{settings().api_url}/v1/jobs/{job.id}"})
    logger.info("dropped edit queued", extra={"job_id": job.id, "tenant": tenant})


def _submit(tenant: str, body: dict[str, Any], idempotency: IdempotencyKey) -> Job:
    from darkroom.jobs.intake import submit_edit

    request = parse_edit_request(body, **settings().request_rules())
    assert isinstance(request, EditRequest)
    found = edits.inputs_of_json(tenant, request)
    errors = edits.judge(found)
    if errors:
        raise ValidationFailed(errors)
    job, _ = submit_edit(tenant, request, found, idempotency)
    return job


def _request_file(key: str, drop: str) -> dict[str, Any]:
    """A `*.edit.json`: the JSON edit body, its images, mask and markup named by file name in the drop prefix."""
    from darkroom.errors import InvalidRequest

    data = aws.client("s3").get_object(Bucket=settings().outputs_bucket, Key=key)["Body"].read(REQUEST_FILE_LIMIT + 1)
    if len(data) > REQUEST_FILE_LIMIT:
        raise InvalidRequest("The request file is over 64 KB.", field="body", rule="request_file_too_large")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidRequest("The request file is not valid JSON.", field="body", rule="json_invalid") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request file must hold a JSON object.", field="body", rule="json_object")
    folder = key[len(drop) :].rpartition("/")[0]
    in_drop = f"drop/{folder}/" if folder else "drop/"

    def source(name: Any) -> Any:
        # A name is a file in the request file's folder; an object is any JSON source (another of the tenant's
        # files, a job's output), judged as in the API.
        return {"file": in_drop + name} if isinstance(name, str) else name

    images = body.get("images")
    if isinstance(images, list):
        body["images"] = [source(name) for name in images]
    for role in ("mask", "markup"):
        if role in body:
            body[role] = source(body[role])
    return body


def _request_of_metadata(metadata: dict[str, str], file: str) -> dict[str, Any] | None:
    """The edit a dropped image's metadata asks for, or None without a prompt. S3 keeps metadata as ASCII headers:
    non-ASCII text arrives RFC 2047-encoded (=?UTF-8?B?...?=) and is decoded here."""
    values = {name.lower(): _decoded(value) for name, value in metadata.items()}
    if "prompt" not in values:
        return None
    body: dict[str, Any] = {"prompt": values["prompt"], "images": [{"file": file}]}
    for name, field in DROP_FIELDS.items():
        if name in values:
            body[field] = values[name]
    extra = {name[len("metadata-") :]: value for name, value in values.items() if name.startswith("metadata-")}
    if extra:
        body["metadata"] = extra
    return body


def _decoded(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, HeaderParseError):
        return value


def _answer(key: str, document: dict[str, Any]) -> None:
    if len(key.encode()) > MAX_KEY_BYTES:
        logger.warning("drop-in answer not written: its key would be too long", extra={"key": key[:200]})
        return
    aws.client("s3").put_object(
        Bucket=settings().outputs_bucket,
        Key=key,
        Body=json.dumps(document, indent=2).encode(),
        ContentType="application/json",
    )
