"""The opt-in cache through the local stack: a request with `cache: true` that matches one of its tenant's succeeded
cached jobs ends with copies of its images and no provider call, counted from the emulator's side."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import boto3
import pytest

from darkroom_local.stack import LocalStack
from tests.images import image_bytes
from tests.pipeline import call_api, deliver, job, manifest, queue_url, receive
from tests.support import drain, http_event

pytestmark = pytest.mark.usefixtures("calm_provider")


def run(stack: LocalStack, body: dict[str, Any], *, tenant: str = "dev", path: str = "generations") -> dict[str, Any]:
    """Submit through the api, deliver through the worker; the job as its tenant sees it."""
    drain(queue_url(stack))
    key = stack.api_keys[tenant]
    status, accepted = call_api(stack, http_event("POST", f"/v1/images/{path}", api_key=key, body=body))
    assert status == 202, accepted
    assert deliver(stack, receive(stack))["batchItemFailures"] == []
    status, shown = call_api(stack, http_event("GET", f"/v1/jobs/{accepted['id']}", api_key=key))
    assert status == 200
    return dict(shown)


def generations(stack: LocalStack, prompt: str) -> int:
    assert stack.emulator is not None
    return int(stack.emulator.calls()["prompts"].get(prompt, {}).get("generations", 0))


def stored(stack: LocalStack, key: str) -> bytes:
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    return bytes(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def test_a_cached_request_reuses_its_tenants_images_without_a_provider_call(stack: LocalStack) -> None:
    prompt = f"a cached harbour {uuid.uuid4()}"
    body = {"prompt": prompt, "size": "1024x1024", "quality": "low", "cache": True}
    first = run(stack, body)
    assert first["status"] == "succeeded" and first["cached_from"] is None and generations(stack, prompt) == 1
    # When the same request comes again, with previews and another end user (neither changes the image)
    second = run(stack, {**body, "partial_images": 1, "user": "someone-else"})
    # Then it ended at once from the first, by the provider's own count, at no provider cost
    assert second["status"] == "succeeded" and second["cached_from"] == first["id"]
    assert generations(stack, prompt) == 1
    assert second["cost"]["provider_usd"] == 0 and second["cost_usd"] == 0 and second["usage"] is None
    assert second["attempts"] == 0
    # with its own copies of the images, under its own keys, and a manifest like any job's
    (mine,), (theirs,) = second["outputs"], first["outputs"]
    assert mine["key"].startswith(f"outputs/dev/{second['id']}/") and mine["key"] != theirs["key"]
    assert stored(stack, mine["key"]) == stored(stack, theirs["key"])
    # its copies are bytes it keeps in storage, in its AWS cost
    assert second["cost"]["aws"]["usage"]["s3_bytes_stored"] >= mine["bytes"] and second["cost"]["aws_usd"] > 0
    assert manifest(stack, job(second["id"]))["cached_from"] == first["id"]
    # And a third reuse still names the job that generated the images
    assert run(stack, body)["cached_from"] == first["id"]


def test_the_cache_is_never_shared_and_never_used_unasked(stack: LocalStack) -> None:
    prompt = f"a private harbour {uuid.uuid4()}"
    body = {"prompt": prompt, "quality": "low", "cache": True}
    run(stack, body)
    # Another tenant's identical request is generated
    assert run(stack, body, tenant="dev-2")["cached_from"] is None and generations(stack, prompt) == 2
    # The same tenant without cache: generated, and it serves no later cached request
    uncached = run(stack, {**body, "cache": False, "quality": "medium"})
    assert uncached["cached_from"] is None and generations(stack, prompt) == 3
    assert run(stack, {**body, "quality": "medium"})["cached_from"] is None and generations(stack, prompt) == 4
    # Any other parameter is another request
    assert run(stack, {**body, "output_format": "webp"})["cached_from"] is None and generations(stack, prompt) == 5


def test_an_old_or_missing_source_is_generated_again(stack: LocalStack, settings_env: Any) -> None:
    prompt = f"an old harbour {uuid.uuid4()}"
    body = {"prompt": prompt, "quality": "low", "cache": True}
    first = run(stack, body)
    # Its images gone from storage (deleted, or expired): the next one is generated, and becomes the source
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    boto3.client("s3").delete_object(Bucket=bucket, Key=first["outputs"][0]["key"])
    second = run(stack, body)
    assert second["cached_from"] is None and generations(stack, prompt) == 2
    # and is not charged for the copy that failed
    own = sum(output["bytes"] for output in second["outputs"])
    assert second["cost"]["aws"]["usage"]["s3_bytes_stored"] - own < first["outputs"][0]["bytes"]
    assert run(stack, body)["cached_from"] == second["id"]
    # Older than CacheMaxAgeSeconds: generated
    settings_env(CACHE_MAX_AGE_S="1")
    time.sleep(1.1)
    assert run(stack, body)["cached_from"] is None and generations(stack, prompt) == 3
    settings_env(CACHE_MAX_AGE_S="0")  # off
    assert run(stack, body)["cached_from"] is None and generations(stack, prompt) == 4


def test_edits_match_by_their_inputs_bytes(stack: LocalStack) -> None:
    prompt = f"a cached edit {uuid.uuid4()}"

    def edit(color: tuple[int, int, int]) -> dict[str, Any]:
        data = base64.b64encode(image_bytes(size=(64, 64), color=color)).decode()
        images = [{"image_url": f"data:image/png;base64,{data}"}]
        return run(stack, {"prompt": prompt, "quality": "low", "cache": True, "images": images}, path="edits")

    first = edit((1, 2, 3))
    assert edit((1, 2, 3))["cached_from"] == first["id"] and generations(stack, prompt) == 1
    assert edit((3, 2, 1))["cached_from"] is None and generations(stack, prompt) == 2


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"n": 2, "cache": True}, "cache", "cache_variations_required"),
        ({"tier": "batch", "cache": True}, "cache", "cache_not_batched"),
        ({"cache_variations": True}, "cache_variations", "cache_variations_needs_cache"),
        ({"cache": "yes"}, "cache", "bool_type"),
    ],
)
def test_what_the_cache_cannot_do_is_a_422_naming_the_field(
    stack: LocalStack, body: dict[str, Any], field: str, rule: str
) -> None:
    drain(queue_url(stack))
    event = http_event("POST", "/v1/images/generations", api_key=stack.api_keys["dev"], body={"prompt": "x", **body})
    status, answer = call_api(stack, event)
    assert status == 422 and {"field": field, "rule": rule} in [
        {"field": f["field"], "rule": f["rule"]} for f in answer["error"]["fields"]
    ]
    assert receive(stack) == []


def test_n_variations_are_reused_only_when_asked(stack: LocalStack) -> None:
    prompt = f"cached variations {uuid.uuid4()}"
    body = {"prompt": prompt, "quality": "low", "n": 2, "cache": True, "cache_variations": True}
    first = run(stack, body)
    second = run(stack, body)
    assert second["cached_from"] == first["id"] and len(second["outputs"]) == 2 and generations(stack, prompt) == 1


def test_a_request_pinned_to_another_provider_is_not_served_the_first_ones_images(stack: LocalStack) -> None:
    prompt = f"a pinned harbour {uuid.uuid4()}"
    body = {"prompt": prompt, "quality": "low", "cache": True}
    run(stack, body)
    drain(queue_url(stack))
    key = stack.api_keys["dev"]
    event = http_event("POST", "/v1/images/generations", api_key=key, body={**body, "provider": "wavespeed"})
    status, accepted = call_api(stack, event)
    assert status == 202
    assert deliver(stack, receive(stack))["batchItemFailures"] == []
    pinned = job(accepted["id"])
    assert pinned.cached_from is None and pinned.route == "wavespeed" and pinned.provider_calls == 1


def test_a_stale_delivery_serving_from_the_cache_never_touches_a_generated_jobs_images(stack: LocalStack) -> None:
    from darkroom.jobs import cache
    from darkroom.jobs.store import JobStore, LeaseLost

    prompt = f"a raced harbour {uuid.uuid4()}"
    body = {"prompt": prompt, "quality": "low", "cache": True}
    run(stack, body)
    # Given a second job read as queued by a delivery that stalls, while another delivery generates it
    drain(queue_url(stack))
    status, accepted = call_api(
        stack, http_event("POST", "/v1/images/generations", api_key=stack.api_keys["dev"], body=body)
    )
    assert status == 202
    stale = job(accepted["id"])
    store = JobStore()
    claimed = store.claim(stale, 60)
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    mine = f"outputs/dev/{stale.id}/0.png"
    boto3.client("s3").put_object(Bucket=bucket, Key=mine, Body=b"MINE")
    # When the stale delivery serves it from the cache, it loses, and the generated image is untouched
    with pytest.raises(LeaseLost):
        cache.serve(store, stale)
    assert stored(stack, mine) == b"MINE"
    assert job(claimed.id).status == "running" and job(claimed.id).cached_from is None
