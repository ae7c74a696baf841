"""OpenAI-compatible Images API over httpx: OpenAI itself, gateways with the same schema, or darkroom's emulator.

One call, no retries: the worker owns the retry policy (through the queue), so a retried POST can never bill twice
without the job store knowing. Errors come back as darkroom.errors.Provider* classes, split by what matters for
billing: `ProviderUnavailable` when the request certainly did not generate (it never left, or a quick 500/503/408/409
said it failed), `ProviderAmbiguous` when it may have (no answer after sending, an answer cut short, a 502 or 504 or
any slow failure). The whole call, headers and body, ends by its deadline (providers/deadline.py).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from darkroom.errors import (
    ProviderAmbiguous,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderRefused,
    ProviderRejected,
    ProviderUnavailable,
)
from darkroom.providers import deadline
from darkroom.providers.images_response import GenerationResult, ImagesResponseReader

REFUSAL_CODES = {"moderation_blocked", "content_policy_violation"}
DEFAULT_RETRY_AFTER_S = 10.0
MAX_RETRY_AFTER_S = 3600.0
# A failure answered sooner than the quickest render cannot be reporting a render that ran, if it is the provider's
# (or a gateway's) own: 500 and 503, 408 and 409. A 502 or 504 reports an upstream that may have been rendering (a
# gateway forwards first), and so does any failure after a long wait: those are ambiguous whatever their speed.
QUICK_FAILURE_S = 5.0
QUICK_FAILURES_UNBILLED = (408, 409, 500, 503)
ERROR_BODY_LIMIT = 64 * 1024
# Provider messages can quote part of a key ("Incorrect API key provided: sk-ab***yz"): never pass that on.
_SECRET_PATTERN = re.compile(r"\b(sk|dr|whsec)[-_][A-Za-z0-9_\-*.]{4,}")
_MAX_MESSAGE = 500
# Failures that happen before the request is on the wire: nothing can have been generated.
_NOT_SENT = (httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ConnectError, httpx.UnsupportedProtocol, httpx.ProxyError)
# A write that fails leaves the provider an incomplete request, which it cannot act on.
_NOT_WHOLLY_SENT = (httpx.WriteTimeout, httpx.WriteError, httpx.LocalProtocolError)

__all__ = ["GenerationResult", "OpenAICompatibleProvider", "error_from_response", "retry_after_s"]


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
                # Answers arrive as they are: a compressed body is decoded whole by httpx, past any size check
                # (a gzip bomb of 1.8 KB decoded to 1 GB), and base64 images barely compress anyway.
                self._client = httpx.Client(
                    transport=self._transport or deadline.transport(),
                    follow_redirects=False,
                    headers={"Accept-Encoding": "identity"},
                )
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
        # httpx's timeouts are per read: the deadline also bounds a provider that trickles its answer.
        timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        sent = time.monotonic()
        ends_at = sent + timeout_s
        answered = False
        try:
            with (
                deadline.within(timeout_s),
                self._http().stream(
                    "POST", f"{self.base_url}/images/generations", json=params, headers=headers, timeout=timeout
                ) as response,
            ):
                answered = True
                # An encoded body is never read, so iter_bytes below never decompresses anything; an error is
                # still classified by its status (a compressed 429 is still a 429).
                encoded = response.headers.get("content-encoding", "").strip().lower() not in ("", "identity")
                if response.status_code >= 300:
                    body = b"" if encoded else _read_bounded(response, ends_at)
                    raise error_from_response(
                        response.status_code,
                        response.headers,
                        body,
                        elapsed_s=time.monotonic() - sent,
                        secrets=(api_key,),
                    )
                if encoded:
                    raise ProviderBadResponse("the provider answered in an encoding darkroom did not ask for")
                reader = ImagesResponseReader(max_images=int(params.get("n") or 1))
                for chunk in response.iter_bytes():
                    reader.feed(chunk)
                    if time.monotonic() > ends_at:
                        raise ProviderAmbiguous(
                            f"the provider's answer took longer than {timeout_s:.0f} s",
                            code="provider_timeout",
                            status=response.status_code,
                        )
                return reader.result()
        except _NOT_SENT as exc:
            raise ProviderUnavailable(f"could not reach the provider ({exc.__class__.__name__})") from None
        except _NOT_WHOLLY_SENT as exc:
            raise ProviderUnavailable(f"the request could not be sent whole ({exc.__class__.__name__})") from None
        except httpx.TimeoutException:
            raise ProviderAmbiguous(
                f"the provider did not answer within {timeout_s:.0f} s"
                if not answered
                else f"the provider's answer stopped arriving for {timeout_s:.0f} s",
                code="provider_timeout",
            ) from None
        except httpx.TransportError as exc:
            raise ProviderAmbiguous(
                f"the connection to the provider was lost after the request was sent ({exc.__class__.__name__})",
                code="provider_disconnected",
            ) from None


def _read_bounded(response: httpx.Response, ends_at: float) -> bytes:
    """An error body, up to ERROR_BODY_LIMIT: it only has to carry a code and a message."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= ERROR_BODY_LIMIT or time.monotonic() > ends_at:
            break
    return bytes(body[:ERROR_BODY_LIMIT])


def error_from_response(
    status: int,
    headers: httpx.Headers,
    body: bytes,
    *,
    elapsed_s: float = 0.0,
    secrets: tuple[str, ...] = (),
) -> ProviderError:
    code, message = _error_fields(body, secrets)
    if status == 400 and code in REFUSAL_CODES:
        return ProviderRefused(message or "the provider refused the prompt under its content policy", status=status)
    if status == 429:
        if code == "insufficient_quota":
            return ProviderRejected("the provider account has no quota left", code="provider_quota", status=status)
        return ProviderRateLimited(message or "rate limited", retry_after_s=retry_after_s(headers))
    if status in QUICK_FAILURES_UNBILLED and elapsed_s < QUICK_FAILURE_S:
        return ProviderUnavailable(f"the provider answered {status}: {message}".rstrip(": "), status=status)
    if status >= 500 or status in QUICK_FAILURES_UNBILLED:
        return ProviderAmbiguous(
            f"the provider answered {status} after {elapsed_s:.0f} s: {message}".rstrip(": "),
            code="provider_unavailable",
            status=status,
        )
    if status in (401, 403):
        # The provider's own text may describe darkroom's credentials: keep it out of jobs and webhooks.
        return ProviderRejected(
            f"the provider refused darkroom's credentials ({status})", code="provider_auth", status=status
        )
    return ProviderRejected(
        message or f"the provider rejected the request ({status})", code="provider_rejected", status=status
    )


def retry_after_s(headers: httpx.Headers) -> float:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date; always a finite number
    between 0 and MAX_RETRY_AFTER_S, whatever the header says (`inf`, `nan`, `1e999`, a date in year 9999)."""
    try:
        if "retry-after-ms" in headers:
            return _bounded(float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                return _bounded(float(value))
            except ValueError:
                from datetime import UTC, datetime

                return _bounded((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (ValueError, TypeError, OverflowError):
        pass
    return DEFAULT_RETRY_AFTER_S


def _bounded(seconds: float) -> float:
    if math.isnan(seconds):
        return DEFAULT_RETRY_AFTER_S
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def _error_fields(body: bytes, secrets: tuple[str, ...]) -> tuple[str, str]:
    try:
        error = json.loads(body).get("error") or {}
    except (ValueError, AttributeError, RecursionError):
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
