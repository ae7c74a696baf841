"""The events a subscriber receives: when a job ends, built from its result manifest, and (`job.progress`, only for
those who ask for it) when a job that streams previews has a new one, built from that preview's progress document.

Standard Webhooks form: `{"type": "job.succeeded" | "job.failed" | "job.canceled", "timestamp", "data"}`. `data`
carries what a subscriber acts on (the job's id, status, model, metadata, usage, cost, error, its outputs with
download links valid for `links_valid_s`, and the job's API URL), never image bytes, and never the prompt (it can be
32,000 characters, and a subscriber that needs it asks the API). The body stays under MAX_BODY_BYTES whatever the
job: if the download links would push it over, they are left out (`data.urls_omitted`), and if metadata of many
long non-ASCII values still does (16 values of 512 four-byte characters are 32 KB), so is it
(`data.metadata_omitted`): the job's API URL serves both. A progress event carries the preview's download link and
the job's, never the job's outputs (it has none yet).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from darkroom import ledger

MAX_BODY_BYTES = 20_000
EVENT_TYPES = {"succeeded": "job.succeeded", "failed": "job.failed", "canceled": "job.canceled"}
PROGRESS_EVENT = "job.progress"
# What a job or endpoint naming no events is sent: every end of a job. `job.progress` goes only where it is named.
DEFAULT_EVENTS = tuple(EVENT_TYPES.values())
_OUTPUT_FIELDS = ("format", "width", "height", "bytes")


def event_type(status: str) -> str:
    return EVENT_TYPES[status]


def event_body(
    manifest: dict[str, Any],
    *,
    timestamp: str,
    api_url: str,
    presign: Callable[[str], str],
    links_valid_s: int,
) -> bytes:
    """The exact bytes that are signed and sent. `presign` makes a download link for an output's key."""
    data: dict[str, Any] = {
        "id": manifest["id"],
        "object": "image.job",
        "status": manifest["status"],
        "model": manifest.get("model"),
        "metadata": manifest.get("metadata") or {},
        "usage": manifest.get("usage"),
        "cost_usd": manifest.get("cost_usd"),
        "cost": ledger.brief(manifest.get("cost")),
        "error": manifest.get("error"),
        "created_at": manifest.get("created_at"),
        "completed_at": manifest.get("completed_at"),
        "url": f"{api_url.rstrip('/')}/v1/jobs/{manifest['id']}",
        "outputs": [{name: output.get(name) for name in _OUTPUT_FIELDS} for output in manifest.get("outputs") or []],
    }
    event = {"type": event_type(manifest["status"]), "timestamp": timestamp, "data": data}
    plain = _encode(event)
    if data["outputs"]:
        with_links = [
            {**entry, "url": presign(output["key"]), "url_expires_in_s": links_valid_s}
            for entry, output in zip(data["outputs"], manifest["outputs"], strict=True)
        ]
        linked = _encode({**event, "data": {**data, "outputs": with_links}})
        if len(linked) <= MAX_BODY_BYTES:
            return linked
        data["urls_omitted"] = True
        plain = _encode(event)
    if len(plain) > MAX_BODY_BYTES:
        data["metadata"], data["metadata_omitted"] = {}, True
        plain = _encode(event)
    return plain


def progress_event_body(
    document: dict[str, Any],
    *,
    timestamp: str,
    api_url: str,
    presign: Callable[[str], str],
    links_valid_s: int,
) -> bytes:
    """The exact bytes of a `job.progress` event, from a preview's progress document (darkroom.jobs.views)."""
    preview = document["preview"]
    data: dict[str, Any] = {
        "id": document["id"],
        "object": "image.job",
        "status": "running",
        "model": document.get("model"),
        "metadata": document.get("metadata") or {},
        "created_at": document.get("created_at"),
        "url": f"{api_url.rstrip('/')}/v1/jobs/{document['id']}",
        "partial_images": document.get("partial_images"),
        "preview": {
            "index": preview.get("index"),
            **{name: preview.get(name) for name in _OUTPUT_FIELDS},
            "created_at": preview.get("created_at"),
            "url": presign(preview["key"]),
            "url_expires_in_s": links_valid_s,
        },
    }
    event = {"type": PROGRESS_EVENT, "timestamp": timestamp, "data": data}
    body = _encode(event)
    if len(body) > MAX_BODY_BYTES:
        data["metadata"], data["metadata_omitted"] = {}, True
        body = _encode(event)
    return body


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
