"""OpenAI-compatible Images API over httpx: OpenAI itself, gateways with the same schema, or darkroom's emulator.

One call, no retries: the worker owns the retry policy (through the queue), so a retried POST can never bill twice
without the job store knowing. Errors come back as darkroom.errors.Provider* classes.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from darkroom.errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderRefused,
    ProviderRejected,
    ProviderUnavailable,
)

REFUSAL_CODES = {"moderation_blocked", "content_policy_violation"}
DEFAULT_RETRY_AFTER_S = 10.0
# Provider messages can quote part of a key ("Incorrect API key provided: sk-ab***yz"): never pass that on.
_SECRET_PATTERN = re.compile(r"\b(sk|dr|whsec)[-_][A-Za-z0-9_\-*.]{4,}")
_MAX_MESSAGE = 500


@dataclass(frozen=True)
class GenerationResult:
    images: list[bytes]
    usage: dict[str, Any] | None
    revised_prompts: list[str | None]


class OpenAICompatibleProvider:
    def __init__(
        self,
        base_url: str,
        api_key: Callable[[], str],
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._transport = transport
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(transport=self._transport, follow_redirects=False)
            return self._client

    def prepare(self) -> None:
        """Fetch the key and build the HTTP client now, so the call itself starts at once."""
        self._api_key()
        self._http()

    def generate(self, params: dict[str, Any], *, timeout_s: float, client_request_id: str) -> GenerationResult:
        api_key = self._api_key()
        headers = {
            "Authorization": f"Bearer {api_key}",
            # OpenAI echoes X-Client-Request-Id in its logs; the emulator counts generations per job with it.
            "X-Client-Request-Id": client_request_id,
        }
        timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        try:
            response = self._http().post(
                f"{self.base_url}/images/generations", json=params, headers=headers, timeout=timeout
            )
        except httpx.TimeoutException:
            raise ProviderUnavailable(f"the provider did not answer within {timeout_s:.0f} s") from None
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"could not reach the provider ({exc.__class__.__name__})") from None
        if response.status_code >= 300:
            raise error_from_response(response, secrets=(api_key,))
        return parse_images_response(response)


def parse_images_response(response: httpx.Response) -> GenerationResult:
    try:
        body = response.json()
        data = body["data"]
        images = [base64.b64decode(item["b64_json"], validate=True) for item in data]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ProviderBadResponse("the provider's answer had no readable images") from None
    if not images:
        raise ProviderBadResponse("the provider answered with no images")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
    return GenerationResult(images=images, usage=usage, revised_prompts=[d.get("revised_prompt") for d in data])


def error_from_response(response: httpx.Response, *, secrets: tuple[str, ...] = ()) -> ProviderError:
    status = response.status_code
    code, message = _error_fields(response, secrets)
    if status == 400 and code in REFUSAL_CODES:
        return ProviderRefused(message or "the provider refused the prompt under its content policy", status=status)
    if status == 429:
        if code == "insufficient_quota":
            return ProviderRejected("the provider account has no quota left", code="provider_quota", status=status)
        return ProviderRateLimited(message or "rate limited", retry_after_s=retry_after_s(response.headers))
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(f"the provider answered {status}: {message}".rstrip(": "), status=status)
    if status in (401, 403):
        # The provider's own text may describe darkroom's credentials: keep it out of jobs and webhooks.
        return ProviderRejected(
            f"the provider refused darkroom's credentials ({status})", code="provider_auth", status=status
        )
    return ProviderRejected(
        message or f"the provider rejected the request ({status})", code="provider_rejected", status=status
    )


def retry_after_s(headers: httpx.Headers) -> float:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                return max(0.0, float(value))
            except ValueError:
                from datetime import UTC, datetime

                return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (ValueError, TypeError):
        pass
    return DEFAULT_RETRY_AFTER_S


def _error_fields(response: httpx.Response, secrets: tuple[str, ...]) -> tuple[str, str]:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return "", ""
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code") or ""), redact(str(error.get("message") or ""), secrets)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Provider text with key-shaped strings and darkroom's own key (in whatever format) taken out."""
    for secret in secrets:
        if len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
    return _SECRET_PATTERN.sub("[redacted]", text)[:_MAX_MESSAGE]
