"""A streamed image call (partial_images) over httpx.MockTransport: previews handed on as they come, the final
image as the answer, and a stream that ends early or reports an error classified by the billing rules."""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from darkroom.errors import ProviderAmbiguous, ProviderBadResponse, ProviderRefused
from darkroom.providers.openai import OpenAICompatibleProvider

PARAMS = {"prompt": "a cat", "model": "gpt-image-2", "partial_images": 2}
USAGE = {"input_tokens": 3, "output_tokens": 400, "total_tokens": 403}


def png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(buffer, "PNG")
    return buffer.getvalue()


def event(name: str, **data: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def partial(index: int) -> bytes:
    b64 = base64.b64encode(png(index * 50)).decode()
    return event("image_generation.partial_image", b64_json=b64, partial_image_index=index, output_format="png")


def completed() -> bytes:
    b64 = base64.b64encode(png(255)).decode()
    return event("image_generation.completed", b64_json=b64, usage=USAGE, output_format="png")


def split_anywhere(body: bytes, rng: random.Random) -> Iterator[bytes]:
    cuts = sorted(rng.sample(range(1, len(body)), min(40, len(body) - 1)))
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        yield body[start:end]


def streaming(
    chunks: Iterator[bytes] | list[bytes], seen: list[httpx.Request] | None = None
) -> OpenAICompatibleProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))

    return OpenAICompatibleProvider(
        "https://api.example.com/v1", lambda: "sk-test-secret-key", transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize("seed", range(5))
def test_events_split_anywhere_give_every_preview_in_order_and_the_final_image(seed: int) -> None:
    # Given a stream of two previews and the final image, cut into chunks at random places
    body = b": keep-alive\n\n" + partial(0) + partial(1) + completed()
    seen: list[httpx.Request] = []
    previews: list[tuple[int, bytes]] = []
    rng = random.Random(seed)

    # When the adapter reads it
    result = streaming(split_anywhere(body, rng), seen).generate(
        PARAMS, timeout_s=5, client_request_id="job_1:1", on_partial=lambda i, data: previews.append((i, data))
    )

    # Then each preview reached the caller as it came, and the final image and usage are the answer
    assert previews == [(0, png(0)), (1, png(50))], f"seed {seed}"
    assert result.images == [png(255)] and result.usage == USAGE
    # and the request asked for a stream
    assert json.loads(seen[0].content) == {**PARAMS, "stream": True}


def test_a_stream_cut_before_its_final_image_is_ambiguous() -> None:
    previews: list[int] = []
    with pytest.raises(ProviderAmbiguous) as caught:
        streaming([partial(0), partial(1)[:50]]).generate(
            PARAMS, timeout_s=5, client_request_id="j:1", on_partial=lambda i, _: previews.append(i)
        )
    assert caught.value.code == "provider_disconnected" and previews == [0]


def test_a_stream_ending_cleanly_without_its_final_image_is_ambiguous() -> None:
    with pytest.raises(ProviderAmbiguous):
        streaming([partial(0), b"data: [DONE]\n\n"]).generate(PARAMS, timeout_s=5, client_request_id="j:1")


def test_an_error_event_is_ambiguous_and_its_message_redacted() -> None:
    error = {"error": {"code": "server_error", "message": "failed for key sk-test-secret-key"}}
    body = partial(0) + f"event: error\ndata: {json.dumps(error)}\n\n".encode()
    with pytest.raises(ProviderAmbiguous) as caught:
        streaming([body]).generate(PARAMS, timeout_s=5, client_request_id="j:1")
    assert caught.value.code == "provider_stream_error"
    assert "sk-test" not in caught.value.message and "[redacted]" in caught.value.message


def test_a_refusal_event_is_a_final_refusal() -> None:
    error = {"type": "error", "error": {"code": "moderation_blocked", "message": "rejected by the safety system"}}
    with pytest.raises(ProviderRefused):
        streaming([f"data: {json.dumps(error)}\n\n".encode()]).generate(PARAMS, timeout_s=5, client_request_id="j:1")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"data: {not json\n\n", id="not-json"),
        pytest.param(event("image_generation.completed", b64_json="@@@@", usage=USAGE), id="not-base64"),
        pytest.param(event("image_generation.completed", usage=USAGE), id="no-image"),
        pytest.param(b"data: \xff\xfe\n\n", id="not-utf8"),
    ],
)
def test_a_garbled_stream_is_a_bad_response(body: bytes) -> None:
    with pytest.raises(ProviderBadResponse):
        streaming([body]).generate(PARAMS, timeout_s=5, client_request_id="j:1")


def test_previews_beyond_those_asked_for_are_not_handed_on() -> None:
    previews: list[int] = []
    streaming([partial(0), partial(1), partial(2), partial(7), completed()]).generate(
        PARAMS, timeout_s=5, client_request_id="j:1", on_partial=lambda i, _: previews.append(i)
    )
    assert previews == [0, 1]


def test_a_provider_that_ignores_stream_and_answers_json_is_read_as_ever() -> None:
    answer = {"data": [{"b64_json": base64.b64encode(png(9)).decode()}], "usage": USAGE}
    provider = OpenAICompatibleProvider(
        "https://api.example.com/v1",
        lambda: "sk-x",
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=answer)),
    )
    result = provider.generate(PARAMS, timeout_s=5, client_request_id="j:1", on_partial=lambda i, _: None)
    assert result.images == [png(9)]


def test_an_edit_asks_for_a_stream_in_its_form() -> None:
    seen: list[httpx.Request] = []
    edit_done = event("image_edit.completed", b64_json=base64.b64encode(png(1)).decode(), usage=USAGE)
    result = streaming([edit_done], seen).edit(
        {"prompt": "p", "model": "gpt-image-2", "partial_images": 1},
        [("image[]", ("a.png", png(3), "image/png"))],
        timeout_s=5,
        client_request_id="j:1",
    )
    assert result.images == [png(1)]
    form = seen[0].read()
    assert b'name="stream"\r\n\r\ntrue' in form and b'name="partial_images"\r\n\r\n1' in form


def test_without_partial_images_nothing_is_streamed() -> None:
    seen: list[httpx.Request] = []
    answer = {"data": [{"b64_json": base64.b64encode(png(9)).decode()}]}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer)

    provider = OpenAICompatibleProvider(
        "https://api.example.com/v1", lambda: "sk-x", transport=httpx.MockTransport(handler)
    )
    provider.generate({"prompt": "p", "partial_images": 0}, timeout_s=5, client_request_id="j:1")
    assert "stream" not in json.loads(seen[0].content)
