"""An ended job in OpenAI's own shapes, for a submission that waited (`Prefer: wait`): `ImagesResponse` when it
succeeded, OpenAI's error body and status when it did not, so the openai SDK reads darkroom as it reads OpenAI."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from darkroom import aws, storage
from darkroom.api.http import Response
from darkroom.jobs.store import Job
from darkroom.observability import logger
from darkroom.settings import settings

# Lambda answers at most 6 MB: images go inline as base64 up to this much of it, else all of them as links.
INLINE_BUDGET_BYTES = 5_000_000

# A failed job's code -> the status OpenAI answers for the same failure. Codes not listed are darkroom's or the
# provider's side failing: 502. A client's own mistakes were refused before the job was accepted.
_FAILED_STATUS = {
    "moderation_blocked": 400,
    "moderation_flagged": 400,
    "provider_rejected": 400,
    "input_invalid": 400,
    "input_missing": 400,
    "upload_expired": 400,
    "canceled": 409,
    "rate_limited": 429,
    "provider_quota": 429,
    "provider_unavailable": 503,
    "moderation_unavailable": 503,
    "provider_timeout": 504,
}
_ERROR_TYPES = {400: "invalid_request_error", 409: "invalid_request_error", 429: "rate_limit_error"}


def ended_job_answer(job: Job, headers: dict[str, str]) -> Response:
    """200 with the images, or the failure as OpenAI words one. The job has ended, so a client that sends the same
    request again starts a new job: the SDK is told not to retry on its own (`x-should-retry: false`)."""
    if job.status == "succeeded":
        return Response(200, images_response(job), headers)
    error = job.error or {"code": job.status, "message": f"The job was {job.status}."}
    code = str(error.get("code", "failed"))
    status = _FAILED_STATUS.get(code, 502)
    kind = "image_generation_user_error" if code.startswith("moderation_") else _ERROR_TYPES.get(status, "server_error")
    body = {"message": error.get("message", ""), "type": kind, "param": None, "code": code, "job_id": job.id}
    if "categories" in error:
        body["categories"] = error["categories"]
    return Response(status, {"error": body}, {**headers, "x-should-retry": "false"})


def images_response(job: Job) -> dict[str, Any]:
    outputs = job.outputs
    first = outputs[0] if outputs else {}
    return {
        "created": int(datetime.fromisoformat(job.completed_at or job.created_at).timestamp()),
        "data": _images(outputs),
        "usage": job.usage,
        "size": f"{first['width']}x{first['height']}" if first else job.request.get("size"),
        "quality": job.request.get("quality", "auto"),
        "output_format": first.get("format", job.request.get("output_format", "png")),
        "background": job.request.get("background", "auto"),
    }


def _images(outputs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """All inline, or all as links: when they would not fit, or storage could not be read (links need no call)."""
    if sum(4 * ((o["bytes"] + 2) // 3) for o in outputs) <= INLINE_BUDGET_BYTES:
        try:
            return [{"b64_json": _base64_of(o["key"])} for o in outputs]
        except Exception:
            logger.warning("outputs could not be read for an inline answer; sending links", exc_info=True)
    return [{"url": storage.presign(o["key"])} for o in outputs]


def _base64_of(key: str) -> str:
    body = aws.client("s3").get_object(Bucket=settings().outputs_bucket, Key=key)["Body"]
    return base64.b64encode(body.read()).decode()
