"""OpenAI-compatible Images API over httpx: OpenAI itself, gateways with the same schema, or darkroom's emulator.

One call, no retries: the worker owns the retry policy (through the queue), so a retried POST can never bill twice
without the job store knowing. Errors come back as darkroom.errors.Provider* classes, split by what matters for
billing: `ProviderUnavailable` when the request certainly did not generate (it never left, or a quick 500/503/408/409
said it failed), `ProviderAmbiguous` when it may have (no answer after sending, an answer cut short, a 502 or 504 or
any slow failure). The whole call, headers and body, ends by its deadline (providers/deadline.py).

A request with `partial_images` is sent with `stream: true`, and its answer read as server-sent events
(providers/image_events.py): each preview goes to `on_partial` as it arrives, and the final event is the answer. A
provider that ignores `stream` and answers with plain JSON is read as ever.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from typing import Any

import httpx

from darkroom.errors import ProviderAmbiguous, ProviderBadResponse, ProviderError
from darkroom.providers import deadline
from darkroom.providers.failures import classify, redact, retry_after_s, transport_failures
from darkroom.providers.image_events import ImageEventsReader, OnPartial, PreviewHandoff
from darkroom.providers.images_response import GenerationResult, ImagesResponseReader
from darkroom.ratelimit import announced_limits

ERROR_BODY_LIMIT = 64 * 1024
# How long a streamed call waits, once it has its answer, for previews still being stored.
PREVIEW_DRAIN_S = 10.0
MODERATION_MODEL = "omni-moderation-latest"
MODERATION_BODY_LIMIT = 256 * 1024  # a result per input, each a few hundred bytes of categories and scores

__all__ = ["GenerationResult", "OpenAICompatibleProvider", "error_from_response", "retry_after_s"]


class OpenAICompatibleProvider(deadline.KeyedClient):
    def generate(
        self,
        params: dict[str, Any],
        *,
        timeout_s: float,
        client_request_id: str,
        on_partial: OnPartial | None = None,
    ) -> GenerationResult:
        body = _streamed(params)
        return self._post("images/generations", body, timeout_s, client_request_id, on_partial, json=body)

    def edit(
        self,
        params: dict[str, Any],
        files: list[Any],
        *,
        timeout_s: float,
        client_request_id: str,
        on_partial: OnPartial | None = None,
    ) -> GenerationResult:
        """An edit, as multipart: the fields as form text and the inputs as file parts (`image[]`, `mask`, `markup`),
        streamed from their files."""
        body = _streamed(params)
        form = {name: str(value).lower() if isinstance(value, bool) else str(value) for name, value in body.items()}
        return self._post("images/edits", body, timeout_s, client_request_id, on_partial, data=form, files=files)

    def moderate(self, inputs: list[dict[str, Any]], *, timeout_s: float) -> list[str]:
        """The categories OpenAI's moderation model flags in `inputs` (text and image_url parts), none when it flags
        nothing. Free, and any failure is raised as the provider error it is."""
        api_key = self._api_key()
        sent = time.monotonic()
        with transport_failures(timeout_s), deadline.within(timeout_s):
            response = self._http().post(
                f"{self.base_url}/moderations",
                headers={"Authorization": f"Bearer {api_key}"},
                json={"model": MODERATION_MODEL, "input": inputs},
                timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            )
        body = response.content[:MODERATION_BODY_LIMIT]
        if response.status_code >= 300:
            raise error_from_response(
                response.status_code, response.headers, body, elapsed_s=time.monotonic() - sent, secrets=(api_key,)
            )
        try:
            results = json.loads(body)["results"]
            flagged = {
                name
                for result in results
                if result["flagged"]
                for name, on in (result.get("categories") or {"unspecified": True}).items()
                if on
            }
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ProviderBadResponse("the moderation check answered in a shape darkroom does not know") from None
        return sorted(flagged or ({"unspecified"} if any(r.get("flagged") for r in results) else set()))

    def _post(
        self,
        path: str,
        params: dict[str, Any],
        timeout_s: float,
        client_request_id: str,
        on_partial: OnPartial | None,
        **body: Any,
    ) -> GenerationResult:
        handoff = PreviewHandoff(on_partial) if on_partial is not None and params.get("partial_images") else None
        try:
            return self._send(path, params, timeout_s, client_request_id, handoff, **body)
        finally:
            if handoff is not None:
                handoff.close(PREVIEW_DRAIN_S)  # outside the call's deadline: the answer is in hand

    def _send(
        self,
        path: str,
        params: dict[str, Any],
        timeout_s: float,
        client_request_id: str,
        handoff: PreviewHandoff | None,
        **body: Any,
    ) -> GenerationResult:
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
        with (
            transport_failures(timeout_s) as progress,
            deadline.within(timeout_s),
            self._http().stream(
                "POST", f"{self.base_url}/{path}", headers=headers, timeout=timeout, **body
            ) as response,
        ):
            progress.answered = True
            # An encoded body is never read, so iter_bytes below never decompresses anything; an error is still
            # classified by its status (a compressed 429 is still a 429).
            encoded = response.headers.get("content-encoding", "").strip().lower() not in ("", "identity")
            if response.status_code >= 300:
                body_bytes = b"" if encoded else read_bounded(response, ends_at=ends_at)
                raise error_from_response(
                    response.status_code,
                    response.headers,
                    body_bytes,
                    elapsed_s=time.monotonic() - sent,
                    secrets=(api_key,),
                )
            if encoded:
                raise ProviderBadResponse("the provider answered in an encoding darkroom did not ask for")
            reader: ImagesResponseReader | ImageEventsReader
            if response.headers.get("content-type", "").lower().startswith("text/event-stream"):
                partials = int(params.get("partial_images") or 0)
                handed = handoff.put if handoff is not None else None
                reader = ImageEventsReader(handed, partial_images=partials, secrets=(api_key,))
            else:
                reader = ImagesResponseReader(max_images=int(params.get("n") or 1))
            for chunk in response.iter_bytes():
                if reader.feed(chunk):
                    break  # the final image is in: the rest of a stream carries nothing darkroom uses
                if time.monotonic() > ends_at:
                    raise ProviderAmbiguous(
                        f"the provider's answer took longer than {timeout_s:.0f} s",
                        code="provider_timeout",
                        status=response.status_code,
                    )
            return replace(reader.result(), rate_limits=announced_limits(response.headers))


def _streamed(params: dict[str, Any]) -> dict[str, Any]:
    """The body to send: with `stream: true` when the request asks for previews."""
    return {**params, "stream": True} if params.get("partial_images") else params


def read_bounded(response: httpx.Response, limit: int = ERROR_BODY_LIMIT, ends_at: float = math.inf) -> bytes:
    """A body up to `limit` bytes (an error body only has to carry a code and a message), read until `ends_at`."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= limit or time.monotonic() > ends_at:
            break
    return bytes(body[:limit])


def error_from_response(
    status: int,
    headers: httpx.Headers,
    body: bytes,
    *,
    elapsed_s: float = 0.0,
    secrets: tuple[str, ...] = (),
) -> ProviderError:
    code, message = _error_fields(body, secrets)
    return classify(status, headers, code, message, elapsed_s=elapsed_s)


def _error_fields(body: bytes, secrets: tuple[str, ...]) -> tuple[str, str]:
    try:
        error = json.loads(body).get("error") or {}
    except (ValueError, AttributeError, RecursionError):
        return "", ""
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code") or ""), redact(str(error.get("message") or ""), secrets)
