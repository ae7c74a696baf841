"""Sending one signed event to one subscriber, and when to try again.

Only a 2xx answer is a delivery. A redirect is a failure and is never followed, so darkroom never sends to a place the
guard did not check. 410 Gone means the subscriber wants no more: its endpoint is disabled. 429 and 5xx may say when
to come back (`retry-after`), which is honoured within the schedule's bounds. Anything else, a timeout or a refused
connection included, is retried on the schedule. The connection goes only to public addresses (darkroom.addresses)
unless the local stack allows private receivers, and at most RESPONSE_LIMIT bytes of the answer are read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache

import httpx

from darkroom.addresses import url_problem
from darkroom.providers import deadline
from darkroom.providers.failures import retry_after_s
from darkroom.webhooks.schedule import DEFAULT_SCHEDULE_S, next_delay_s, parse_schedule

__all__ = ["DEFAULT_SCHEDULE_S", "Attempt", "next_delay_s", "parse_schedule", "send"]

TIMEOUT_S = 15.0
RESPONSE_LIMIT = 4096  # what is kept of a subscriber's answer, for the delivery record
USER_AGENT = "darkroom-webhooks/1"


@dataclass(frozen=True)
class Attempt:
    """What one try came to: `delivered`, `gone` (410), or `failed`; with what the subscriber said, if anything."""

    outcome: str
    status: int | None
    latency_ms: int
    error: str | None = None
    retry_after_s: float | None = None
    response: str = ""


@cache
def _client(allow_private: bool) -> httpx.Client:
    return deadline.client(public_only=not allow_private)


def send(url: str, body: bytes, headers: dict[str, str], *, allow_http: bool, allow_private: bool) -> Attempt:
    """One POST of a signed event, within TIMEOUT_S for the whole exchange."""
    started = time.monotonic()

    def took() -> int:
        return round((time.monotonic() - started) * 1000)

    problem = url_problem(url, allow_http=allow_http, allow_private=True)  # the address is checked at connect time
    if problem:
        return Attempt("failed", None, 0, error=f"darkroom will not send to this URL: {problem}")
    request_headers = {**headers, "content-type": "application/json", "user-agent": USER_AGENT}
    try:
        with (
            deadline.within(TIMEOUT_S),
            _client(allow_private).stream(
                "POST", url, content=body, headers=request_headers, timeout=httpx.Timeout(TIMEOUT_S, connect=5.0)
            ) as response,
        ):
            kept = bytearray()
            if response.headers.get("content-encoding", "identity").strip().lower() == "identity":
                for chunk in response.iter_bytes():
                    kept += chunk
                    if len(kept) >= RESPONSE_LIMIT:
                        break
            status = response.status_code
            answer = bytes(kept[:RESPONSE_LIMIT]).decode("utf-8", "replace")
            # Up to a day: the schedule itself waits hours, and next_delay_s holds it to the schedule's longest.
            wait = retry_after_s(response.headers, maximum=86_400) if "retry-after" in response.headers else None
    except Exception as exc:  # httpx's errors, and whatever else a URL or an answer can raise: a failed try
        return Attempt("failed", None, took(), error=f"{exc.__class__.__name__}: the subscriber could not be reached")
    if 200 <= status < 300:
        return Attempt("delivered", status, took(), response=answer)
    if status == 410:
        return Attempt("gone", status, took(), error="the subscriber answered 410 Gone", response=answer)
    error = "a redirect, which darkroom does not follow" if 300 <= status < 400 else f"the subscriber answered {status}"
    honoured = wait if status == 429 or status >= 500 else None
    return Attempt("failed", status, took(), error=error, retry_after_s=honoured, response=answer)
