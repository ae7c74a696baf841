"""Job outputs and result manifests in S3.

Layout: `outputs/{tenant}/{job}/{i}.{ext}` for images, then `outputs/{tenant}/{job}/result.json` written last. The
manifest's arrival is what tells the rest of darkroom (webhooks) that the job has ended, so every terminal state
writes one, and writing it again is harmless. A job that streams previews also gets `partial-{k}.{ext}` for each, and
`partial-{k}.progress.json` after it, whose arrival announces the preview (the `job.progress` webhook event). A job
served from the cache holds copies named `cached-{attempt}-{i}.{ext}` (darkroom.jobs.cache): its outputs say which.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from darkroom import aws, ledger
from darkroom.images import CONTENT_TYPES, EXTENSIONS, ImageInfo
from darkroom.jobs.store import Job
from darkroom.settings import settings

MANIFEST = "result.json"
PROGRESS_SUFFIX = ".progress.json"


def job_prefix(job: Job) -> str:
    return f"outputs/{job.tenant}/{job.id}/"


def output_key(job: Job, index: int, fmt: str) -> str:
    return f"{job_prefix(job)}{index}.{EXTENSIONS[fmt]}"


def put_output(job: Job, index: int, data: bytes, info: ImageInfo) -> dict[str, Any]:
    return _put_image(job, output_key(job, index, info.format), data, info)


def copy_output(source: dict[str, Any], job: Job, name: str) -> dict[str, Any]:
    """Another job's stored output copied under this job as `name` (the cache): the same bytes, never read here."""
    key = f"{job_prefix(job)}{name}.{EXTENSIONS[source['format']]}"
    aws.client("s3").copy_object(
        Bucket=settings().outputs_bucket,
        Key=key,
        CopySource={"Bucket": settings().outputs_bucket, "Key": source["key"]},
        ContentType=CONTENT_TYPES[source["format"]],
        Metadata={"width": str(source["width"]), "height": str(source["height"]), "job-id": job.id},
        MetadataDirective="REPLACE",
    )
    meter = ledger.current()
    if meter is not None:  # a copy is stored bytes too, though no body passes through the request
        meter.count("s3_bytes_stored", int(source.get("bytes") or 0))
    return {**{name: source[name] for name in ("format", "width", "height", "bytes")}, "key": key}


def put_preview(job: Job, index: int, data: bytes, info: ImageInfo) -> dict[str, Any]:
    return _put_image(job, f"{job_prefix(job)}partial-{index}.{EXTENSIONS[info.format]}", data, info)


def _put_image(job: Job, key: str, data: bytes, info: ImageInfo) -> dict[str, Any]:
    aws.client("s3").put_object(
        Bucket=settings().outputs_bucket,
        Key=key,
        Body=data,
        ContentType=CONTENT_TYPES[info.format],
        Metadata={"width": str(info.width), "height": str(info.height), "job-id": job.id},
    )
    return {"key": key, "format": info.format, "width": info.width, "height": info.height, "bytes": len(data)}


def stored_outputs(job: Job) -> dict[int, dict[str, Any]]:
    """Outputs already stored by an earlier attempt, by index, described from their object metadata.

    Listed rather than looked up by the requested format: an output is stored under the format found in its bytes,
    which a gateway may answer differently from the one asked for."""
    s3 = aws.client("s3")
    bucket = settings().outputs_bucket
    formats = {ext: fmt for fmt, ext in EXTENSIONS.items()}
    found: dict[int, dict[str, Any]] = {}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=job_prefix(job))
    for page in pages:
        for item in page.get("Contents", []):
            index, _, ext = item["Key"][len(job_prefix(job)) :].partition(".")
            if not index.isdecimal() or ext not in formats:
                continue  # the manifest, or anything else under the prefix
            meta = s3.head_object(Bucket=bucket, Key=item["Key"]).get("Metadata", {})
            found[int(index)] = {
                "key": item["Key"],
                "format": formats[ext],
                "width": int(meta.get("width", 0)),
                "height": int(meta.get("height", 0)),
                "bytes": item["Size"],
            }
    return found


def write_manifest(job: Job, document: dict[str, Any]) -> None:
    aws.client("s3").put_object(
        Bucket=settings().outputs_bucket,
        Key=job_prefix(job) + MANIFEST,
        Body=json.dumps(document, indent=2).encode(),
        ContentType="application/json",
    )


def progress_key(job: Job, index: int) -> str:
    return f"{job_prefix(job)}partial-{index}{PROGRESS_SUFFIX}"


def write_progress(job: Job, index: int, document: dict[str, Any]) -> None:
    aws.client("s3").put_object(
        Bucket=settings().outputs_bucket,
        Key=progress_key(job, index),
        Body=json.dumps(document).encode(),
        ContentType="application/json",
    )


def read_manifest(tenant: str, job_id: str) -> dict[str, Any] | None:
    """A job's result manifest, or None once it has expired (or never was)."""
    return _read_json(f"outputs/{tenant}/{job_id}/{MANIFEST}")


def read_progress(tenant: str, job_id: str, index: int) -> dict[str, Any] | None:
    """What a preview's progress document says, or None once it has expired."""
    return _read_json(f"outputs/{tenant}/{job_id}/partial-{index}{PROGRESS_SUFFIX}")


def _read_json(key: str) -> dict[str, Any] | None:
    try:
        body = aws.client("s3").get_object(Bucket=settings().outputs_bucket, Key=key)["Body"]
    except Exception as exc:
        if aws.error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise
    return dict(json.loads(body.read()))


def manifest_exists(job: Job) -> bool:
    """Listed, not HeadObject: a listing under the job's prefix says "absent" the same way whatever a role's
    ListBucket grant looks like, where HeadObject of a missing key answers 403 or 404 depending on it."""
    key = job_prefix(job) + MANIFEST
    listed = aws.client("s3").list_objects_v2(Bucket=settings().outputs_bucket, Prefix=key, MaxKeys=1)
    return any(item["Key"] == key for item in listed.get("Contents", []))


def presign(key: str) -> str:
    return str(
        aws.client("s3").generate_presigned_url(
            "get_object",
            Params={"Bucket": settings().outputs_bucket, "Key": key},
            ExpiresIn=settings().presign_ttl_s,
        )
    )


# An edit's inputs, stored under inputs/{tenant}/{job}/ when it was accepted (darkroom.edits).

InputFile = tuple[str, tuple[str, IO[bytes], str]]  # (form field, (file name, file, content type)), as httpx takes it


@contextlib.contextmanager
def input_files(job: Job) -> Iterator[list[InputFile]]:
    """The job's inputs as form parts, each downloaded to a temporary file: an edit may bring 16 images of up to
    50 MB, which are streamed to the provider from disk rather than held in memory. Removed when done."""
    s3 = aws.client("s3")
    bucket = settings().outputs_bucket
    inputs = job.inputs or {}
    named = [("image[]", item) for item in inputs.get("images", [])]
    named += [(role, inputs[role]) for role in ("mask", "markup") if inputs.get(role)]
    with contextlib.ExitStack() as stack:
        parts: list[InputFile] = []
        for field, item in named:
            handle = stack.enter_context(tempfile.TemporaryFile())
            s3.download_fileobj(bucket, item["key"], handle)
            handle.seek(0)
            parts.append((field, (item["key"].rpartition("/")[2], handle, CONTENT_TYPES[item["format"]])))
        yield parts


def input_urls(job: Job, ttl_s: int) -> list[str]:
    """Short-lived download links to the job's input images, for a provider that fetches them itself."""
    s3 = aws.client("s3")
    return [
        str(
            s3.generate_presigned_url(
                "get_object", Params={"Bucket": settings().outputs_bucket, "Key": item["key"]}, ExpiresIn=ttl_s
            )
        )
        for item in (job.inputs or {}).get("images", [])
    ]
