"""Previews of a job's image (partial_images) against moto's server and the emulator: stored and shown while the job
renders, billed once, announced by `job.progress` only to those who ask, and never at the cost of the image."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from PIL import Image
from standardwebhooks.webhooks import Webhook

from darkroom import aws, pricing, storage
from darkroom.webhooks.endpoints import WebhookStore
from darkroom_local.stack import LocalStack
from tests.integration.test_webhook_notify import Receiver, first_tries, notify, start_receiver
from tests.pipeline import deliver, generations, job, manifest, queue_url, receive, submit
from tests.support import drain, http_event, response_json

pytestmark = pytest.mark.usefixtures("calm_provider")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = start_receiver()
    yield server
    server.shutdown()


@pytest.fixture(autouse=True)
def quiet_notifications(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("CompletionsQueue", "WebhookRetryQueue"):
        drain(queue_url(stack, name))
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE_S", "0,0,0")
    aws.reset()
    yield
    for name in ("CompletionsQueue", "WebhookRetryQueue"):
        drain(queue_url(stack, name))
    aws.reset()  # the settings are read again once the environment is back


def get_job(stack: LocalStack, job_id: str) -> dict[str, Any]:
    response = stack.functions["ApiFunction"].invoke(
        http_event("GET", f"/v1/jobs/{job_id}", api_key=stack.api_keys["dev"])
    )
    assert response["statusCode"] == 200, response["body"]
    return dict(response_json(response))


def test_previews_are_shown_while_the_job_renders_then_kept_beside_its_image(stack: LocalStack) -> None:
    # Given a provider that takes 1.5 s, streaming a preview every half second
    assert stack.emulator is not None
    stack.emulator.config.latency_ms = 1500
    job_id = submit(stack, prompt="a harbour at dawn", partial_images=2, size="1024x1024")
    messages = receive(stack)
    worker = threading.Thread(target=deliver, args=(stack, messages))
    worker.start()
    # When the job is read while the worker runs
    seen: list[tuple[str, int]] = []
    while worker.is_alive():
        document = get_job(stack, job_id)
        seen.append((document["status"], len(document["progress"]["previews"])))
        time.sleep(0.05)
    worker.join()

    # Then the previews appeared one by one while the job was still running
    assert ("running", 1) in seen and ("running", 2) in seen, seen
    done = get_job(stack, job_id)
    assert done["status"] == "succeeded"
    progress = done["progress"]
    assert progress["partial_images"] == 2 and [p["index"] for p in progress["previews"]] == [0, 1]
    for preview in progress["previews"]:
        assert preview["key"] == f"outputs/{job(job_id).tenant}/{job_id}/partial-{preview['index']}.png"
        image = Image.open(io.BytesIO(httpx.get(preview["url"]).content))
        assert image.size == (1024, 1024) and (preview["width"], preview["height"]) == (1024, 1024)
    # and the job's image, usage and cost are the final event's: one generation, previews billed in its usage
    ended = job(job_id)
    assert generations(stack, f"{job_id}") == 1
    assert ended.usage and ended.usage["output_tokens"] == 1756 + 200
    assert ended.cost_usd == pricing.cost_usd("gpt-image-2", ended.usage)
    assert [o["key"].rsplit("/", 1)[1] for o in ended.outputs] == ["0.png"]
    assert [p["index"] for p in manifest(stack, ended)["progress"]["previews"]] == [0, 1]


def test_a_stream_cut_after_a_preview_fails_the_job_and_is_never_repeated(stack: LocalStack) -> None:
    job_id = submit(stack, prompt="a harbour [cut]", partial_images=2)
    deliver(stack, receive(stack))
    failed = job(job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "provider_disconnected"
    assert "not repeated" in failed.error["message"]
    assert failed.provider_calls == 1 and receive(stack, wait_s=1) == []
    assert generations(stack, job_id) == 1
    # The preview that came before the cut is still shown
    assert [p["index"] for p in get_job(stack, job_id)["progress"]["previews"]] == [0]


def test_a_preview_that_cannot_be_stored_costs_the_job_nothing(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("S3 is having a bad day")

    monkeypatch.setattr(storage, "put_preview", broken)
    job_id = submit(stack, prompt="a harbour, unstored previews", partial_images=3)
    deliver(stack, receive(stack))
    done = job(job_id)
    assert done.status == "succeeded" and done.previews == [] and generations(stack, job_id) == 1
    assert get_job(stack, job_id)["progress"] == {"partial_images": 3, "previews": []}


def test_a_job_without_partial_images_shows_no_progress(stack: LocalStack) -> None:
    job_id = submit(stack, prompt="a harbour, no previews")
    deliver(stack, receive(stack))
    assert get_job(stack, job_id)["progress"] is None
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"outputs/{job(job_id).tenant}/{job_id}/")
    assert sorted(item["Key"].rsplit("/", 1)[1] for item in listed["Contents"]) == ["0.png", "result.json"]


def announced_job(stack: LocalStack, receiver: Receiver, prompt: str, *, partial_images: int) -> str:
    """A job with previews whose url asks for job.progress and job.succeeded, run, and its events' first tries made."""
    job_id = submit(
        stack,
        prompt=prompt,
        partial_images=partial_images,
        webhook_url=receiver.url,
        webhook_events=["job.progress", "job.succeeded"],
    )
    deliver(stack, receive(stack))
    first_tries(stack)
    return job_id


def test_job_progress_goes_only_where_it_is_asked_for(stack: LocalStack, receiver: Receiver) -> None:
    # Given an endpoint taking the default events, and a job whose own url asks for progress too
    other = start_receiver()
    endpoint, endpoint_secret = WebhookStore().create_endpoint(
        "dev", url=other.url, events=["job.succeeded"], description="", enabled=True
    )
    try:
        # When S3's events (two progress documents, then the manifest) reach the notify function
        job_id = announced_job(stack, receiver, "a harbour, announced", partial_images=2)
    finally:
        WebhookStore().delete_endpoint("dev", endpoint.id)
        other.shutdown()

    # Then the job's url got both previews and the end, each signed, each with a webhook-id of its own
    secret = WebhookStore().tenant_secrets("dev")[0]
    events = [Webhook(secret).verify(body, headers) for headers, body in receiver.seen]
    progress = sorted((e for e in events if e["type"] == "job.progress"), key=lambda e: e["data"]["preview"]["index"])
    assert [e["data"]["preview"]["index"] for e in progress] == [0, 1]
    assert all(e["data"]["id"] == job_id and e["data"]["status"] == "running" for e in progress)
    assert httpx.get(progress[0]["data"]["preview"]["url"]).status_code == 200
    assert [e["type"] for e in events if e["type"] != "job.progress"] == ["job.succeeded"]
    assert len({headers["webhook-id"] for headers, _ in receiver.seen}) == 3
    # and the endpoint, which did not name job.progress, got only the end
    assert [Webhook(endpoint_secret).verify(body, headers)["type"] for headers, body in other.seen] == ["job.succeeded"]


def test_a_progress_event_is_tried_a_few_times_only(stack: LocalStack, receiver: Receiver, settings_env: Any) -> None:
    # Given a subscriber that always fails, and a schedule of five tries
    settings_env(WEBHOOK_RETRY_SCHEDULE_S="0,0,0,0,0")
    receiver.answers[:] = [500] * 100
    announced_job(stack, receiver, "a harbour nobody hears", partial_images=1)
    # When every try has been made
    for _ in range(6):
        notify(stack, "WebhookRetryQueue")
    # Then the preview's event was tried three times (it is stale in minutes), the job's end all five
    secret = WebhookStore().tenant_secrets("dev")[0]
    kinds = [Webhook(secret).verify(body, headers)["type"] for headers, body in receiver.seen]
    assert kinds.count("job.progress") == 3 and kinds.count("job.succeeded") == 5, kinds
