"""How a failed provider call is classified, by what it means for billing, whatever the provider's API.

- `ProviderUnavailable`: the request certainly did not generate (it never left, or was not sent whole, or a quick
  500/503/408/409 said it failed): worth another try;
- `ProviderAmbiguous`: it may have (no answer after sending, a connection cut, a 502 or 504, any slow failure):
  never repeated unless the operator opted in;
- `ProviderRateLimited`, `ProviderRefused`, `ProviderRejected`: what the provider said, final or retried later.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

from darkroom.errors import (
    ProviderAmbiguous,
    ProviderError,
    ProviderRateLimited,
    ProviderRefused,
    ProviderRejected,
    ProviderUnavailable,
)

REFUSAL_CODES = {"moderation_blocked", "content_policy_violation"}
DEFAULT_RETRY_AFTER_S = 10.0
MAX_RETRY_AFTER_S = 3600.0
# A failure answered sooner than the quickest render cannot be reporting a render that ran, if it is the provider's
# (or a gateway's) own: 500 and 503, 408 and 409. A 502 or 504 reports an upstream that may have been rendering (a
# gateway forwards first), and so does any failure after a long wait: those are ambiguous whatever their speed.
QUICK_FAILURE_S = 5.0
QUICK_FAILURES_UNBILLED = (408, 409, 500, 503)
# Provider messages can quote part of a key ("Incorrect API key provided: sk-ab***yz"): never pass that on.
_SECRET_PATTERN = re.compile(r"\b(sk|dr|whsec)[-_][A-Za-z0-9_\-*.]{4,}")
_MAX_MESSAGE = 500
# Failures that happen before the request is on the wire: nothing can have been generated.
_NOT_SENT = (httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ConnectError, httpx.UnsupportedProtocol, httpx.ProxyError)
# A write that fails leaves the provider an incomplete request, which it cannot act on.
_NOT_WHOLLY_SENT = (httpx.WriteTimeout, httpx.WriteError, httpx.LocalProtocolError)


@dataclass
class CallProgress:
    """What `transport_failures` needs to know to word a timeout: whether the answer had begun to arrive."""

    answered: bool = False


@contextlib.contextmanager
def transport_failures(timeout_s: float) -> Iterator[CallProgress]:
    """httpx's transport errors inside the block, raised again as the provider outcome they amount to."""
    progress = CallProgress()
    try:
        yield progress
    except _NOT_SENT as exc:
        raise ProviderUnavailable(f"could not reach the provider ({exc.__class__.__name__})") from None
    except _NOT_WHOLLY_SENT as exc:
        raise ProviderUnavailable(f"the request could not be sent whole ({exc.__class__.__name__})") from None
    except httpx.TimeoutException:
        raise ProviderAmbiguous(
            f"the provider's answer stopped arriving for {timeout_s:.0f} s"
            if progress.answered
            else f"the provider did not answer within {timeout_s:.0f} s",
            code="provider_timeout",
        ) from None
    except httpx.TransportError as exc:
        raise ProviderAmbiguous(
            f"the connection to the provider was lost after the request was sent ({exc.__class__.__name__})",
            code="provider_disconnected",
        ) from None


def classify(
    status: int,
    headers: httpx.Headers,
    code: str,
    message: str,
    *,
    elapsed_s: float = 0.0,
) -> ProviderError:
    """The outcome of a provider's error answer: its HTTP status, its own error code and (redacted) message."""
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


def retry_after_s(headers: httpx.Headers, *, maximum: float = MAX_RETRY_AFTER_S) -> float:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date; always a finite number
    between 0 and `maximum` (MAX_RETRY_AFTER_S for providers), whatever the header says (`inf`, `nan`, `1e999`, a
    date in year 9999)."""
    try:
        if "retry-after-ms" in headers:
            return _bounded(float(headers["retry-after-ms"]) / 1000, maximum)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                return _bounded(float(value), maximum)
            except ValueError:
                from datetime import UTC, datetime

                return _bounded((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), maximum)
    except (ValueError, TypeError, OverflowError):
        pass
    return DEFAULT_RETRY_AFTER_S


def _bounded(seconds: float, maximum: float) -> float:
    if math.isnan(seconds):
        return DEFAULT_RETRY_AFTER_S
    return min(maximum, max(0.0, seconds))


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Provider text with key-shaped strings and darkroom's own key (in whatever format) taken out."""
    for secret in secrets:
        if len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
    return _SECRET_PATTERN.sub("[redacted]", text)[:_MAX_MESSAGE]
