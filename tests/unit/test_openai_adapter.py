"""The OpenAI-compatible adapter over httpx.MockTransport: what it sends, and how each answer is classified."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable

import httpx
import pytest
from PIL import Image

from darkroom.errors import (
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderRefused,
    ProviderRejected,
    ProviderUnavailable,
)
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


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503])
def test_transient_statuses_are_retryable(status: int) -> None:
    with pytest.raises(ProviderUnavailable):
        provider(lambda r: error(status, None)).generate(PARAMS, timeout_s=5, client_request_id="j:1")


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.RemoteProtocolError("x")]
)
def test_timeouts_and_connection_errors_are_retryable(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(ProviderUnavailable):
        provider(handler).generate(PARAMS, timeout_s=5, client_request_id="j:1")


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
