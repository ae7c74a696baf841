"""Hostile or unlucky streams read by the OpenAI-compatible adapter: what a provider sends decides nothing beyond what
was asked, and a preview never costs the job its image."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from darkroom.errors import ProviderAmbiguous
from darkroom.providers.openai import OpenAICompatibleProvider
from tests.unit.test_streamed_images import PARAMS, completed, partial, png

GATEWAY_KEY = "gw-live-7c1f0a9e5b2d4c83"  # a gateway key, not shaped like sk-...


def provider(chunks: list[bytes], key: str = GATEWAY_KEY) -> OpenAICompatibleProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))

    return OpenAICompatibleProvider("https://gw.example.com/v1", lambda: key, transport=httpx.MockTransport(handler))


def error_event(error: dict[str, object]) -> bytes:
    return f"event: error\ndata: {json.dumps({'type': 'error', 'error': error})}\n\n".encode()


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(GATEWAY_KEY, id="darkroom-key-in-code"),
        pytest.param("invalid key sk-proj-AbCdEfGh12345678", id="key-shaped-code"),
    ],
)
def test_an_error_events_code_never_carries_a_key_into_the_jobs_error(code: str) -> None:
    # Given a stream whose error event has no message, and a key in its code
    with pytest.raises(ProviderAmbiguous) as caught:
        provider([partial(0), error_event({"code": code})]).generate(PARAMS, timeout_s=5, client_request_id="j:1")
    # Then the message that becomes the job's error (and its webhook's) holds no key: the message field is redacted,
    # the code field must be too
    assert GATEWAY_KEY not in caught.value.message
    assert "sk-proj-AbCdEfGh12345678" not in caught.value.message


def test_an_error_events_code_is_bounded_like_its_message() -> None:
    # Given an error event whose code is 300 KB (a hostile gateway)
    with pytest.raises(ProviderAmbiguous) as caught:
        provider([error_event({"code": "x" * 300_000})]).generate(PARAMS, timeout_s=5, client_request_id="j:1")
    # Then the job's error message stays as short as a redacted message is (500 characters and the prefix); 300 KB
    # here is written into the job's DynamoDB item (400 KB limit) and every manifest and webhook of the job
    assert len(caught.value.message) < 1_000, len(caught.value.message)


def test_a_preview_index_repeated_by_the_provider_is_handed_on_once() -> None:
    # Given a gateway that sends preview 0 two hundred times before the final image
    handed: list[int] = []
    provider([partial(0)] * 200 + [completed()]).generate(
        PARAMS, timeout_s=5, client_request_id="j:1", on_partial=lambda i, _: handed.append(i)
    )
    # Then at most partial_images previews reach the recorder: each is an S3 put, a DynamoDB write of the job, a
    # progress document, an S3 event and a notify invocation, so the provider must not choose how many there are
    assert len(handed) <= 2, f"{len(handed)} previews handed on"  # PARAMS asks for two


def test_a_slow_preview_store_never_costs_the_job_its_image() -> None:
    # Given a stream that is whole and quick (a preview, then the final image) and a preview store that is slow
    # (S3 or DynamoDB retrying: darkroom's clients allow ~20 s per call, three calls per preview)
    def slow_store(index: int, data: bytes) -> None:
        time.sleep(1.2)

    # When the call's deadline is shorter than the time spent storing the preview
    result = provider([partial(0), completed()]).generate(
        PARAMS, timeout_s=1, client_request_id="j:1", on_partial=slow_store
    )
    # Then the final image, which the provider sent in time and billed, is the answer ("a preview never costs the
    # job its image"), not a provider timeout
    assert result.images == [png(255)]


@pytest.mark.parametrize(
    "bad_preview",
    [
        pytest.param({"partial_image_index": 0}, id="preview-without-image"),
        pytest.param({"partial_image_index": 0, "b64_json": "@@@@"}, id="preview-not-base64"),
    ],
)
def test_a_garbled_preview_never_costs_the_job_its_image(bad_preview: dict[str, object]) -> None:
    # Given a stream whose preview is unusable but whose final image is whole
    event = {"type": "image_generation.partial_image", **bad_preview}
    body = f"event: image_generation.partial_image\ndata: {json.dumps(event)}\n\n".encode()
    # Then the final image is the answer, as it is when a preview's bytes are not an image (the recorder logs
    # PreviewsLost and reads on), not a bad response that costs the job its billed image
    result = provider([body, completed()]).generate(
        PARAMS, timeout_s=5, client_request_id="j:1", on_partial=lambda i, _: None
    )
    assert result.images == [png(255)]
