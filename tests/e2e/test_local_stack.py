"""The whole local stack over HTTP, as a curl user or a frontend sees it."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from darkroom import queue
from darkroom.jobs.store import JobStore
from darkroom_local.stack import LocalStack
from tests.e2e.served import api_client, served_stack, wait_for_end

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def running() -> Iterator[LocalStack]:
    with served_stack(environment={"SWEEP_GRACE_S": "1"}, schedule_interval_s=1) as stack:
        yield stack


@pytest.fixture(scope="module")
def client(running: LocalStack) -> Iterator[httpx.Client]:
    with api_client(running) as http:
        yield http


def test_generate_a_webp_and_download_it(client: httpx.Client) -> None:
    # Given a frontend asking for a 1536x1024 WebP
    answer = client.post(
        "/v1/images/generations",
        json={"prompt": "a lighthouse at dusk", "size": "1536x1024", "output_format": "webp", "quality": "low"},
    )
    assert answer.status_code == 202
    assert answer.headers["location"] == f"/v1/jobs/{answer.json()['id']}"
    # When it polls until the job ends
    job = wait_for_end(client, answer.json()["id"])
    # Then the job succeeded with usage and cost, and its URL downloads a real 1536x1024 WebP
    assert job["status"] == "succeeded", job["error"]
    assert job["usage"]["output_tokens"] > 0 and job["cost_usd"] > 0
    (output,) = job["outputs"]
    assert (output["format"], output["width"], output["height"]) == ("webp", 1536, 1024)
    download = httpx.get(output["url"], timeout=30)
    assert download.status_code == 200 and download.headers["content-type"] == "image/webp"
    assert len(download.content) == output["bytes"]
    image = Image.open(io.BytesIO(download.content))
    assert (image.format, image.size) == ("WEBP", (1536, 1024))


def test_transparent_png_keeps_its_alpha(client: httpx.Client) -> None:
    body = {"prompt": "a sticker", "model": "gpt-image-1.5", "background": "transparent", "size": "1024x1024"}
    job = wait_for_end(client, client.post("/v1/images/generations", json=body).json()["id"])
    image = Image.open(io.BytesIO(httpx.get(job["outputs"][0]["url"]).content))
    corner = image.getpixel((0, 0))
    assert image.format == "PNG" and image.mode == "RGBA" and isinstance(corner, tuple) and corner[3] == 0


@pytest.mark.parametrize(
    ("body", "status", "field", "rule"),
    [
        ({"prompt": "a cat", "size": "1000x1000"}, 422, "size", "size_multiple_of_16"),
        ({"prompt": "a cat", "n": 11}, 422, "n", "less_than_equal"),
        ({"prompt": "x" * 32_001}, 422, "prompt", "string_too_long"),
        ({"prompt": "a cat", "model": "dall-e-3"}, 422, "model", "model_retired"),
    ],
)
def test_bad_requests_name_field_and_rule(
    client: httpx.Client, body: dict[str, Any], status: int, field: str, rule: str
) -> None:
    answer = client.post("/v1/images/generations", json=body)
    assert answer.status_code == status
    problem = answer.json()["error"]["fields"][0]
    assert (problem["field"], problem["rule"]) == (field, rule)


def test_missing_key_is_401_and_another_tenants_job_is_404(running: LocalStack, client: httpx.Client) -> None:
    job_id = client.post("/v1/images/generations", json={"prompt": "private"}).json()["id"]
    anonymous = httpx.get(f"{running.api_url}/v1/jobs/{job_id}")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    other = httpx.get(
        f"{running.api_url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {running.api_keys['dev-2']}"}
    )
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"


def test_refused_prompt_fails_with_the_providers_code(client: httpx.Client) -> None:
    job = wait_for_end(client, client.post("/v1/images/generations", json={"prompt": "[refuse] this"}).json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "moderation_blocked" and job["outputs"] == []


def test_listing_finds_the_tenants_jobs_newest_first(client: httpx.Client) -> None:
    ids = [client.post("/v1/images/generations", json={"prompt": f"list {i}"}).json()["id"] for i in range(3)]
    listed = client.get("/v1/jobs", params={"limit": 3}).json()
    assert [job["id"] for job in listed["data"]] == list(reversed(ids))


def test_cancel_of_a_running_job_is_409(running: LocalStack, client: httpx.Client) -> None:
    assert running.emulator is not None
    running.emulator.config.latency_ms = 1500
    try:
        job_id = client.post("/v1/images/generations", json={"prompt": "slow"}).json()["id"]
        deadline = time.monotonic() + 10
        while client.get(f"/v1/jobs/{job_id}").json()["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        answer = client.delete(f"/v1/jobs/{job_id}")
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "job_running"
    finally:
        running.emulator.config.latency_ms = 0
    assert wait_for_end(client, job_id)["status"] == "succeeded"


def test_unknown_route_is_404_like_api_gateway(running: LocalStack) -> None:
    answer = httpx.get(f"{running.api_url}/v2/nothing")
    assert answer.status_code == 404 and answer.json() == {"message": "Not Found"}


def test_cors_preflight_is_answered_from_the_template(running: LocalStack) -> None:
    answer = httpx.options(
        f"{running.api_url}/v1/images/generations",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "authorization" in answer.headers["access-control-allow-headers"]


def test_a_job_whose_message_is_lost_is_revived_by_the_scheduled_sweeper(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a submission whose message is lost and whose withdrawal fails too (SQS and DynamoDB both failing)
    with monkeypatch.context() as outage:
        outage.setattr(queue, "send_job", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("SQS down")))
        outage.setattr(JobStore, "delete_unstarted", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("down")))
        answer = client.post("/v1/images/generations", json={"prompt": "lost in transit"})
    assert answer.status_code == 503
    job_id = re.search(r"job_[0-9a-z]{26}", answer.json()["error"]["message"]).group(0)  # type: ignore[union-attr]
    # When nothing but the stack's own schedule runs / Then the sweeper sends its message and the job succeeds
    assert wait_for_end(client, job_id, timeout_s=20)["status"] == "succeeded"


def test_repeated_query_parameters_and_headers_are_joined_as_api_gateway_joins_them(running: LocalStack) -> None:
    # Given a query naming status twice, and a request carrying two Authorization headers, the second one good
    good = f"Bearer {running.api_keys['dev']}"
    twice = httpx.get(
        f"{running.api_url}/v1/jobs",
        params=[("status", "queued"), ("status", "failed")],
        headers={"Authorization": good},
    )
    two_keys = httpx.get(
        f"{running.api_url}/v1/jobs", headers=[("Authorization", "Bearer dr_wrong"), ("Authorization", good)]
    )
    # Then the function sees "queued,failed" and "Bearer dr_wrong,Bearer ...", as in AWS: neither is valid
    assert twice.status_code == 422 and twice.json()["error"]["fields"][0]["field"] == "status"
    assert two_keys.status_code == 401


def test_a_job_with_two_previews_shows_both_before_it_succeeds(running: LocalStack, client: httpx.Client) -> None:
    # Given a provider that takes 3 s, streaming a preview each second
    assert running.emulator is not None
    running.emulator.config.latency_ms = 3000
    try:
        job = client.post("/v1/images/generations", json={"prompt": "a harbour at dawn", "partial_images": 2}).json()
        # When the job is read over HTTP until it ends
        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = client.get(f"/v1/jobs/{job['id']}").json()
            seen.append((now["status"], len(now["progress"]["previews"])))
            if now["status"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(0.1)
    finally:
        running.emulator.config.latency_ms = 0
    # Then both previews were shown, downloadable, while it ran, and then it succeeded
    assert ("running", 2) in seen and seen[-1][0] == "succeeded", seen
    for preview in now["progress"]["previews"]:
        assert httpx.get(preview["url"]).status_code == 200
