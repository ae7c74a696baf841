"""Job outputs and result manifests in S3.

Layout: `outputs/{tenant}/{job}/{i}.{ext}` for images, then `outputs/{tenant}/{job}/result.json` written last. The
manifest's arrival is what tells the rest of darkroom (webhooks) that the job has ended, so every terminal state
writes one, and writing it again is harmless.
"""

from __future__ import annotations

import json
from typing import Any

from darkroom import aws
from darkroom.images import CONTENT_TYPES, EXTENSIONS, ImageInfo
from darkroom.jobs.store import Job
from darkroom.settings import settings

MANIFEST = "result.json"


def job_prefix(job: Job) -> str:
    return f"outputs/{job.tenant}/{job.id}/"


def output_key(job: Job, index: int, fmt: str) -> str:
    return f"{job_prefix(job)}{index}.{EXTENSIONS[fmt]}"


def put_output(job: Job, index: int, data: bytes, info: ImageInfo) -> dict[str, Any]:
    key = output_key(job, index, info.format)
    aws.client("s3").put_object(
        Bucket=settings().outputs_bucket,
        Key=key,
        Body=data,
        ContentType=CONTENT_TYPES[info.format],
        Metadata={"width": str(info.width), "height": str(info.height), "job-id": job.id},
    )
    return {"key": key, "format": info.format, "width": info.width, "height": info.height, "bytes": len(data)}


def find_output(job: Job, index: int, fmt: str) -> dict[str, Any] | None:
    """An output already stored by an earlier attempt, described from its object metadata; None if absent."""
    key = output_key(job, index, fmt)
    try:
        head = aws.client("s3").head_object(Bucket=settings().outputs_bucket, Key=key)
    except Exception as exc:
        if _is_missing(exc):
            return None
        raise
    meta = head.get("Metadata", {})
    return {
        "key": key,
        "format": fmt,
        "width": int(meta.get("width", 0)),
        "height": int(meta.get("height", 0)),
        "bytes": head["ContentLength"],
    }


def write_manifest(job: Job, document: dict[str, Any]) -> None:
    aws.client("s3").put_object(
        Bucket=settings().outputs_bucket,
        Key=job_prefix(job) + MANIFEST,
        Body=json.dumps(document, indent=2).encode(),
        ContentType="application/json",
    )


def manifest_exists(job: Job) -> bool:
    try:
        aws.client("s3").head_object(Bucket=settings().outputs_bucket, Key=job_prefix(job) + MANIFEST)
    except Exception as exc:
        if _is_missing(exc):
            return False
        raise
    return True


def presign(key: str) -> str:
    return str(
        aws.client("s3").generate_presigned_url(
            "get_object",
            Params={"Bucket": settings().outputs_bucket, "Key": key},
            ExpiresIn=settings().presign_ttl_s,
        )
    )


def _is_missing(exc: Exception) -> bool:
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
    return code in {"404", "NoSuchKey", "NotFound"}
