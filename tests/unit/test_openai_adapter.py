"""The OpenAI-compatible adapter over httpx.MockTransport: what it sends, and how each answer is classified."""

from __future__ import annotations

import base64
import gzip
import io
import json
import random
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import httpx
import pytest
from PIL import Image

from darkroom.errors import (
    ProviderAmbiguous,
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderRefused,
    ProviderRejected,
    ProviderUnavailable,
)
from darkroom.providers import failures
from darkroom.providers import openai as openai_adapter
from darkroom.providers.openai import OpenAICompatibleProvider, retry_after_s

PARAMS = {"prompt": "a cat", "model": "gpt-image-2", "n": 1, "size": "1024x1024"}


def png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def provider(handler: Callable[[httpx.Request], httpx.Response]) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        "https://gateway.example.com/v1/", lambda: "sk-test-secret", transport=httpx.MockTransport(handler)
    )


def error(
    status: int, code: str | None, message: str = "nope", headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return httpx.Response(status, json=body, headers=headers)


def test_success_sends_openai_request_and_returns_images_and_usage() -> None:
    seen: list[httpx.Request] = []
    usage = {"input_tokens": 3, "output_tokens": 100, "total_tokens": 103}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"created": 1, "data": [{"b64_json": png(), "revised_prompt": "r"}], "usage": usage}
        )

    result = provider(handler).generate(PARAMS, timeout_s=5, client_request_id="job_1:1")

    assert len(result.images) == 1 and result.images[0].startswith(b"\x89PNG")
    assert result.usage == usage and result.revised_prompts == ["r"]
    request = seen[0]
    assert str(request.url) == "https://gateway.example.com/v1/images/generations"
    assert request.headers["authorization"] == "Bearer sk-test-secret"
    assert request.headers["x-client-request-id"] == "job_1:1"
    assert json.loads(request.content) == PARAMS


@pytest.mark.parametrize("code", ["moderation_blocked", "content_policy_violation"])
def test_content_policy_refusal_is_final(code: str) -> None:
    with pytest.raises(ProviderRefused) as caught:
        provider(lambda r: error(400, code, "Your request was rejected")).generate(
            PARAMS, timeout_s=5, client_request_id="j:1"
        )
    assert caught.value.code == "moderation_blocked"


def test_rate_limit_carries_retry_after() -> None:
    response = error(429, "rate_limit_exceeded", headers={"retry-after": "7"})
    with pytest.raises(ProviderRateLimited) as caught:
        provider(lambda r: response).generate(PARAMS, timeout_s=5, client_request_id="j:1")
    assert caught.value.retry_after_s == 7


def test_exhausted_quota_is_not_retried() -> None:
    with pytest.raises(ProviderRejected) as caught:
        provider(lambda r: error(429, "insufficient_quota")).generate(PARAMS, timeout_s=5, client_request_id="j:1")
    assert caught.value.code == "provider_quota"


@pytest.mark.parametrize("status", [408, 409, 500, 503])
def test_quick_failures_certainly_did_not_generate_and_are_retryable(status: int) -> None:
    with pytest.raises(ProviderUnavailable):
        provider(lambda r: error(status, None)).generate(PARAMS, timeout_s=5, client_request_id="j:1")


@pytest.mark.parametrize("status", [502, 504, 520, 524])
def test_a_gateway_reporting_its_upstream_may_have_generated_however_fast(status: int) -> None:
    # A gateway forwards first: its 502/504 may follow a render the upstream still bills
    with pytest.raises(ProviderAmbiguous) as caught:
        provider(lambda r: error(status, None)).generate(PARAMS, timeout_s=5, client_request_id="j:1")
    assert caught.value.code == "provider_unavailable" and caught.value.status == status


@pytest.mark.parametrize("status", [408, 409, 500, 503])
def test_any_failure_after_a_long_wait_may_have_generated(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    # Given any wait counting as long / When the failure comes back / Then the call is ambiguous, not retryable
    monkeypatch.setattr(failures, "QUICK_FAILURE_S", 0.0)
    with pytest.raises(ProviderAmbiguous):
        provider(lambda r: error(status, None)).generate(PARAMS, timeout_s=5, client_request_id="j:1")


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("no route"),
        httpx.PoolTimeout("pool"),
        httpx.WriteError("cut while sending"),
    ],
)
def test_failures_before_the_request_was_sent_whole_are_retryable(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(ProviderUnavailable):
        provider(handler).generate(PARAMS, timeout_s=5, client_request_id="j:1")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ReadTimeout("slow"), "provider_timeout"),
        (httpx.RemoteProtocolError("server disconnected"), "provider_disconnected"),
        (httpx.ReadError("reset"), "provider_disconnected"),
    ],
)
def test_no_answer_after_sending_is_ambiguous(exc: Exception, code: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(ProviderAmbiguous) as caught:
        provider(handler).generate(PARAMS, timeout_s=5, client_request_id="j:1")
    assert caught.value.code == code


def test_an_answer_cut_short_is_ambiguous() -> None:
    # Given a 200 whose body stops half way (the provider generated and billed)
    def cut() -> Iterator[bytes]:
        yield b'{"data": [{"b64_json": "' + png().encode()[:8]
        raise httpx.ReadError("connection reset")

    with pytest.raises(ProviderAmbiguous) as caught:
        provider(lambda r: httpx.Response(200, content=cut())).generate(PARAMS, timeout_s=5, client_request_id="j:1")
    assert caught.value.code == "provider_disconnected"


def test_a_trickling_answer_is_cut_at_the_call_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a clock that moves a second per chunk and a 3 s call
    ticks = iter(range(1000))
    monkeypatch.setattr(openai_adapter.time, "monotonic", lambda: float(next(ticks)))

    def trickle() -> Iterator[bytes]:
        yield b'{"data": [{"b64_json": "'
        while True:
            yield b"AAAA"

    with pytest.raises(ProviderAmbiguous) as caught:
        provider(lambda r: httpx.Response(200, content=trickle())).generate(
            PARAMS, timeout_s=3, client_request_id="j:1"
        )
    assert caught.value.code == "provider_timeout"


def test_a_huge_error_body_is_read_only_as_far_as_needed() -> None:
    served = []

    def endless() -> Iterator[bytes]:
        while True:
            served.append(1)
            yield b" " * 65536

    with pytest.raises(ProviderRejected):
        provider(lambda r: httpx.Response(400, content=endless())).generate(
            PARAMS, timeout_s=5, client_request_id="j:1"
        )
    assert len(served) <= 2


def test_a_large_answer_is_decoded_without_holding_the_encoded_body() -> None:
    # Given a 4 MB answer streamed in 64 KiB chunks
    images = [random.Random(i).randbytes(1_000_000) for i in range(3)]
    encoded = json.dumps({"data": [{"b64_json": base64.b64encode(i).decode()} for i in images]}).encode()
    parts = [encoded[i : i + 65536] for i in range(0, len(encoded), 65536)]
    del encoded
    adapter = provider(lambda r: httpx.Response(200, content=iter(parts)))
    adapter.prepare()
    # When it is read under tracemalloc
    tracemalloc.start()
    result = adapter.generate({**PARAMS, "n": 3}, timeout_s=5, client_request_id="j:1")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Then memory peaked near the decoded images, not at body + parsed text + images
    assert result.images == images
    assert peak < 1.6 * sum(map(len, images)), f"peak {peak / 1e6:.1f} MB"


def test_bad_key_message_never_repeats_the_providers_text() -> None:
    response = error(401, "invalid_api_key", "Incorrect API key provided: sk-test-***cret.")
    with pytest.raises(ProviderRejected) as caught:
        provider(lambda r: response).generate(PARAMS, timeout_s=5, client_request_id="j:1")
    assert caught.value.code == "provider_auth"
    assert "sk-" not in caught.value.message


def test_other_rejections_redact_anything_shaped_like_a_key() -> None:
    response = error(400, "invalid_value", "bad size for key sk-proj-abcdef123456")
    with pytest.raises(ProviderRejected) as caught:
        provider(lambda r: response).generate(PARAMS, timeout_s=5, client_request_id="j:1")
    assert caught.value.code == "provider_rejected"
    assert caught.value.message == "bad size for key [redacted]"


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"data": []}', b'{"data": [{"b64_json": "%%%"}]}', b'{"nothing": 1}'],
)
def test_unreadable_success_is_a_bad_response(body: bytes) -> None:
    with pytest.raises(ProviderBadResponse):
        provider(lambda r: httpx.Response(200, content=body)).generate(PARAMS, timeout_s=5, client_request_id="j:1")


def test_retry_after_forms() -> None:
    assert retry_after_s(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    assert retry_after_s(httpx.Headers({"retry-after": "3"})) == 3
    assert retry_after_s(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0
    assert retry_after_s(httpx.Headers({"retry-after": "soon"})) == 10
    assert retry_after_s(httpx.Headers({})) == 10


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        ("retry-after", "inf", 3600),
        ("retry-after", "1e999", 3600),
        ("retry-after", "nan", 10),
        ("retry-after", "-5", 0),
        ("retry-after-ms", "inf", 3600),
        ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT", 3600),
    ],
)
def test_retry_after_is_always_a_finite_bounded_wait(header: str, value: str, expected: float) -> None:
    assert retry_after_s(httpx.Headers({header: value})) == expected


def test_the_literal_provider_key_is_redacted_whatever_its_format() -> None:
    odd_key = "gw-9f8e7d6c5b4a"

    def handler(request: httpx.Request) -> httpx.Response:
        return error(404, "model_not_found", f"no model for key {odd_key} at /v1")

    adapter = OpenAICompatibleProvider(
        "https://gw.example.com/v1", lambda: odd_key, transport=httpx.MockTransport(handler)
    )
    with pytest.raises(ProviderRejected) as caught:
        adapter.generate(PARAMS, timeout_s=5, client_request_id="j:1")
    assert odd_key not in caught.value.message and "[redacted]" in caught.value.message


def test_compressed_answers_are_neither_asked_for_nor_decoded() -> None:
    # Given a gateway that compresses anyway (a gzip bomb of a few KB can decode to gigabytes)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=gzip.compress(b" " * 1_000_000), headers={"content-encoding": "gzip"})

    # When it answers / Then the answer is refused unread, and darkroom had asked for none
    with pytest.raises(ProviderBadResponse, match="encoding"):
        provider(handler).generate(PARAMS, timeout_s=5, client_request_id="j:1")
    assert seen[0].headers["accept-encoding"] == "identity"


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_server_trickling_its_answer_is_cut_at_the_calls_deadline(where: str) -> None:
    # Given a server that sends a byte every 0.2 s (each read timeout is reset by every byte)
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            head = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n"
            if where == "body":
                connection.sendall(head + b'{"data": [{"b64_json": "')
            give_up = time.monotonic() + 10  # so that without a deadline the test fails rather than hangs
            while not stop.is_set() and time.monotonic() < give_up:
                try:
                    connection.sendall(b"X-Slow: 1\r\n"[:1] if where == "headers" else b"A")
                except OSError:
                    return
                stop.wait(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    adapter = OpenAICompatibleProvider(f"http://127.0.0.1:{server.getsockname()[1]}/v1", lambda: "sk-test")
    started = time.monotonic()
    # When darkroom calls it with a 1.5 s timeout
    try:
        with pytest.raises(ProviderAmbiguous) as caught:
            adapter.generate(PARAMS, timeout_s=1.5, client_request_id="j:1")
    finally:
        stop.set()
        server.close()
    # Then the call ends at its deadline, as a timeout, not when the server stops
    assert caught.value.code == "provider_timeout"
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(("status", "expected"), [(429, ProviderRateLimited), (503, ProviderUnavailable)])
def test_a_compressed_error_is_still_classified_by_its_status(status: int, expected: type[Exception]) -> None:
    # Given a gateway that compresses its error answers anyway / Then the status decides, unread
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=gzip.compress(b"{}"), headers={"content-encoding": "gzip"})

    with pytest.raises(expected):
        provider(handler).generate(PARAMS, timeout_s=5, client_request_id="j:1")
