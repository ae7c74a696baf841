"""The event a subscriber receives: what it holds, and that it stays under 20 KB whatever the job."""

from __future__ import annotations

import json
from typing import Any

import pytest

from darkroom.webhooks.events import MAX_BODY_BYTES, event_body

API = "https://api.darkroom.example"


def manifest(**fields: Any) -> dict[str, Any]:
    return {
        "id": "job_01m845x2c7f0m0r7a1b2c3d4e5",
        "status": "succeeded",
        "model": "gpt-image-2",
        "request": {"prompt": "a lighthouse " * 2000},
        "metadata": {"order": "42"},
        "usage": {"input_tokens": 10, "output_tokens": 1056},
        "cost_usd": 0.03173,
        "error": None,
        "created_at": "2026-11-23T12:00:00.000Z",
        "completed_at": "2026-11-23T12:00:20.000Z",
        "outputs": [{"key": "outputs/t/job/0.png", "format": "png", "width": 1024, "height": 1024, "bytes": 1234}],
        "tenant": "t",
        **fields,
    }


def body_of(document: dict[str, Any], link: str = "https://s3.example/o?X-Amz-Signature=abc") -> dict[str, Any]:
    raw = event_body(
        document, timestamp="2026-11-23T12:00:21Z", api_url=API, presign=lambda key: link, links_valid_s=3600
    )
    assert len(raw) <= MAX_BODY_BYTES
    return dict(json.loads(raw))


def test_a_succeeded_job_event_has_what_a_subscriber_acts_on() -> None:
    event = body_of(manifest())
    assert event["type"] == "job.succeeded" and event["timestamp"] == "2026-11-23T12:00:21Z"
    data = event["data"]
    assert data["url"] == f"{API}/v1/jobs/job_01m845x2c7f0m0r7a1b2c3d4e5"
    assert (
        data["metadata"] == {"order": "42"} and data["cost_usd"] == 0.03173 and data["usage"]["output_tokens"] == 1056
    )
    (output,) = data["outputs"]
    assert output == {
        "format": "png",
        "width": 1024,
        "height": 1024,
        "bytes": 1234,
        "url": "https://s3.example/o?X-Amz-Signature=abc",
        "url_expires_in_s": 3600,
    }
    # Never the prompt, the tenant, or the storage key
    assert "request" not in data and "tenant" not in data and "key" not in output


@pytest.mark.parametrize(("status", "kind"), [("failed", "job.failed"), ("canceled", "job.canceled")])
def test_failed_and_canceled_jobs_carry_their_error(status: str, kind: str) -> None:
    error = {"code": "moderation_blocked", "message": "The provider refused the prompt."}
    event = body_of(manifest(status=status, outputs=[], error=error))
    assert event["type"] == kind and event["data"]["error"] == error and event["data"]["outputs"] == []


def test_the_largest_job_stays_under_20_kb() -> None:
    # Ten outputs with long links, and the most metadata a job may carry, in four-byte characters
    outputs = [dict(manifest()["outputs"][0], key=f"outputs/t/job/{i}.png") for i in range(10)]
    metadata = {f"{i:02d}" + "k" * 62: "\U0001f600" * 512 for i in range(16)}
    event = body_of(manifest(outputs=outputs, metadata=metadata), link="https://s3.example/" + "x" * 1500)
    assert event["data"]["urls_omitted"] is True and event["data"]["metadata_omitted"] is True
    assert len(event["data"]["outputs"]) == 10 and "url" not in event["data"]["outputs"][0]


def test_links_are_left_out_before_metadata() -> None:
    outputs = [dict(manifest()["outputs"][0], key=f"outputs/t/job/{i}.png") for i in range(10)]
    event = body_of(manifest(outputs=outputs), link="https://s3.example/" + "x" * 2500)
    assert event["data"]["urls_omitted"] is True and event["data"]["metadata"] == {"order": "42"}
