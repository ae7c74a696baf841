"""An edit's input files: gathered from wherever the request holds them, judged, then stored with the job.

Inputs come as a form's file parts, as base64 (or a data: URL) in JSON, or as references to files darkroom already
holds for the tenant: a file under its own `uploads/{tenant}/` prefix, or an output of one of its jobs. Every one is
judged from its bytes (darkroom.inputs) before the job exists, and stored under `inputs/{tenant}/{job}/` before the
job is queued, so the worker only ever reads what was judged. A reference is copied inside S3, on the condition that
the object is still the one that was judged (its ETag).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from darkroom import aws, catalog
from darkroom.errors import FieldError, ValidationFailed
from darkroom.images import EXTENSIONS
from darkroom.inputs import InputImage, InputRejected, check_image, check_mask
from darkroom.models import EditRequest, ImageSource
from darkroom.settings import settings

ROLES = ("image", "mask", "markup")
_DATA_URL = re.compile(r"data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
FILE_CHANGED = "The file changed or went away while darkroom read it; try again."
# What S3 answers a read or copy conditional on an ETag when the object was replaced or deleted meanwhile.
CHANGED_OR_GONE = ("PreconditionFailed", "412", "404", "NoSuchKey")


@dataclass
class EditInput:
    """One input file: its role, the field that named it (for errors), and its bytes or the object holding them."""

    role: str
    field: str
    data: bytes | None = None
    source_key: str | None = None
    source_etag: str | None = None
    info: InputImage | None = None
    sha256: str = ""


def inputs_of_form(files: dict[str, list[bytes]]) -> list[EditInput]:
    found = [EditInput("image", f"image[{i}]", data) for i, data in enumerate(files.get("image", []))]
    found += [EditInput(role, role, data) for role in ("mask", "markup") for data in files.get(role, [])[:1]]
    return found


def inputs_of_json(tenant: str, request: EditRequest) -> list[EditInput]:
    """Each source the request names, read; a source that cannot be read is a ValidationFailed naming it."""
    named = [("image", f"images[{i}]", source) for i, source in enumerate(request.images or [])]
    named += [(role, role, getattr(request, role)) for role in ("mask", "markup") if getattr(request, role)]
    found, errors = [], []
    for role, field, source in named:
        try:
            found.append(_read_source(tenant, role, field, source))
        except InputRejected as exc:
            errors.append(exc.on(field))
    if errors:
        raise ValidationFailed(errors)
    return found


def judge(found: list[EditInput]) -> list[FieldError]:
    """Every input against the rules of its role; fills in `info`. All refusals at once, each naming its field."""
    errors: list[FieldError] = []
    first: InputImage | None = None
    for item in sorted(found, key=lambda item: ROLES.index(item.role)):  # images first: the mask needs the first
        try:
            data = item.data if item.data is not None else _read(item)
            if item.role == "image":
                item.info = check_image(data)
            elif first is None:
                continue  # the missing or refused first image is reported already
            elif item.role == "mask":
                item.info = check_mask(data, first)
            else:
                item.info = check_mask(data, first, what="markup", limit=catalog.MAX_INPUT_IMAGE_BYTES)
        except InputRejected as exc:
            errors.append(exc.on(item.field))
            continue
        item.sha256 = hashlib.sha256(data).hexdigest()
        if item.role == "image" and first is None:
            first = item.info
    return errors


def fingerprint(found: list[EditInput]) -> list[str]:
    """What the inputs are, for an idempotency key: their roles and digests."""
    return [f"{item.role}:{item.sha256}" for item in found]


def input_key(tenant: str, job_id: str, item: EditInput, index: int) -> str:
    assert item.info is not None
    name = f"image-{index}" if item.role == "image" else item.role
    return f"inputs/{tenant}/{job_id}/{name}.{EXTENSIONS[item.info.format]}"


def store_inputs(tenant: str, job_id: str, found: list[EditInput]) -> dict[str, Any]:
    """Put every judged input under the job's inputs prefix; returns the job's record of them."""
    s3 = aws.client("s3")
    bucket = settings().outputs_bucket
    record: dict[str, Any] = {"images": []}
    images = 0
    for item in found:
        assert item.info is not None
        key = input_key(tenant, job_id, item, images)
        metadata = {"width": str(item.info.width), "height": str(item.info.height), "job-id": job_id}
        if item.data is not None:
            s3.put_object(Bucket=bucket, Key=key, Body=item.data, ContentType=item.info.content_type, Metadata=metadata)
        else:
            try:
                s3.copy_object(
                    Bucket=bucket,
                    Key=key,
                    CopySource={"Bucket": bucket, "Key": item.source_key},
                    CopySourceIfMatch=item.source_etag,  # the object judged, not one put there since
                    ContentType=item.info.content_type,
                    Metadata=metadata,
                    MetadataDirective="REPLACE",
                )
            except Exception as exc:
                if aws.error_code(exc) not in CHANGED_OR_GONE:
                    raise
                raise ValidationFailed([FieldError(item.field, "file_changed", FILE_CHANGED)]) from None
        entry = {
            "key": key,
            "format": item.info.format,
            "width": item.info.width,
            "height": item.info.height,
            "bytes": item.info.bytes,
            "sha256": item.sha256,  # what the cache matches inputs by (darkroom.jobs.cache)
        }
        if item.role == "image":
            record["images"].append(entry)
            images += 1
        else:
            record[item.role] = entry
    return record


# Reading sources


def _read_source(tenant: str, role: str, field: str, source: ImageSource) -> EditInput:
    limit = catalog.MAX_MASK_BYTES if role == "mask" else catalog.MAX_INPUT_IMAGE_BYTES
    if source.b64_json is not None:
        return EditInput(role, field, _base64(source.b64_json, limit))
    if source.image_url is not None:
        prefix = _DATA_URL.match(source.image_url)
        if not prefix:
            raise InputRejected(
                "image_url_not_data",
                "image_url must be a data: URL (data:image/png;base64,...); darkroom fetches no URLs. "
                "Upload large images with POST /v1/uploads.",
            )
        return EditInput(role, field, _base64(source.image_url[prefix.end() :], limit))
    if source.file is not None:
        return _object(role, field, _uploaded_file_key(tenant, source.file), limit)
    assert source.job_output is not None
    return _object(role, field, _job_output_key(tenant, source.job_output.job_id, source.job_output.index), limit)


def _base64(text: str, limit: int) -> bytes:
    if len(text) > (limit // 3 + 1) * 4 + 4:
        raise InputRejected("image_too_large", f"The image must be under {limit // (1024 * 1024)} MB.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputRejected("base64_invalid", "The image is not valid base64.") from None


def _uploaded_file_key(tenant: str, name: str) -> str:
    parts = name.split("/")
    if not 0 < len(name) <= 512 or not name.isprintable() or any(part in ("", ".", "..") for part in parts):
        raise InputRejected("file_name", "file names a file under your uploads prefix, such as drop/photo.png.")
    return f"uploads/{tenant}/{name}"


def _job_output_key(tenant: str, job_id: str, index: int) -> str:
    from darkroom.jobs.store import JobStore

    job = JobStore().get_for_tenant(job_id, tenant)
    if job is None:
        raise InputRejected("job_not_found", f"No job {job_id}.")
    if job.status != "succeeded" or index >= len(job.outputs):
        raise InputRejected("job_output_not_found", f"Job {job_id} has no output {index}.")
    return str(job.outputs[index]["key"])


def _object(role: str, field: str, key: str, limit: int) -> EditInput:
    """A reference's size and version, checked before a byte is read."""
    try:
        head = aws.client("s3").head_object(Bucket=settings().outputs_bucket, Key=key)
    except Exception as exc:
        if aws.error_code(exc) in ("404", "NoSuchKey", "403"):
            raise InputRejected("file_not_found", "No such file (it may have expired).") from None
        raise
    if head["ContentLength"] >= limit:
        raise InputRejected("image_too_large", f"The {role} must be under {limit // (1024 * 1024)} MB.")
    return EditInput(role, field, source_key=key, source_etag=head["ETag"])


def _read(item: EditInput) -> bytes:
    try:
        body = aws.client("s3").get_object(
            Bucket=settings().outputs_bucket, Key=item.source_key, IfMatch=item.source_etag
        )["Body"]
    except Exception as exc:
        if aws.error_code(exc) in CHANGED_OR_GONE:
            raise InputRejected("file_changed", FILE_CHANGED) from None
        raise
    return bytes(body.read())
