"""OpenAI's streamed image answer (`stream: true` with `partial_images`), read event by event as it arrives.

Each `*.partial_image` event is handed to the caller at once (the job's previews), and the `*.completed` event is
the answer: the final image, its usage and its settings, exactly what the plain JSON answer would have carried. A
stream that ends before its completed event was cut after the provider began rendering, which may have been billed:
that is ambiguous, as a cut plain answer is. An error event is the provider's verdict on a render under way: a
content-policy refusal is final, anything else may have been billed and is ambiguous too.

Streaming returns one image (the events carry no image index), so darkroom only streams requests for n=1. What a
provider sends decides nothing beyond what was asked: each preview index is handed on once, up to `partial_images`,
and a preview that cannot be read is passed over (the final image is what was billed). Previews are handed on from
a thread of their own (`PreviewHandoff`), so storing one never holds up the stream or eats into the call's deadline.
"""

from __future__ import annotations

import binascii
import contextvars
import json
import queue
import re
import threading
from collections.abc import Callable
from typing import Any

from darkroom.errors import ProviderAmbiguous, ProviderBadResponse, ProviderRefused
from darkroom.observability import logger
from darkroom.providers.failures import REFUSAL_CODES, redact
from darkroom.providers.images_response import MAX_IMAGE_BYTES, GenerationResult, token_counts
from darkroom.providers.sse import EventStreamDecoder, EventStreamError, ServerSentEvent

PARTIAL_EVENTS = ("image_generation.partial_image", "image_edit.partial_image")
COMPLETED_EVENTS = ("image_generation.completed", "image_edit.completed")
# OpenAI offers up to three previews; a provider sending more is not heeded beyond them.
MAX_PARTIAL_IMAGES = 3
# An event is one image in base64 (4/3 of its bytes) and a few hundred bytes of settings and usage.
MAX_EVENT_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024

# Called with each preview's index and bytes while the stream goes on.
OnPartial = Callable[[int, bytes], None]
# An error event's code is shown only when it looks like one: a provider's code field is not trusted with a key.
_CODE = re.compile(r"[a-z0-9_.\-]{1,64}")


class ImageEventsReader:
    """Feed it the body's chunks in order until `feed` says the final image has come, then call `result()`."""

    def __init__(self, on_partial: OnPartial | None, *, partial_images: int, secrets: tuple[str, ...] = ()) -> None:
        self._decoder = EventStreamDecoder(MAX_EVENT_BYTES)
        self._on_partial = on_partial
        self._partial_images = min(partial_images, MAX_PARTIAL_IMAGES)
        self._secrets = secrets
        self._result: GenerationResult | None = None
        self._handed: set[int] = set()

    def feed(self, chunk: bytes) -> bool:
        """True once the completed event has arrived: nothing after it matters."""
        try:
            events = self._decoder.feed(chunk)
        except EventStreamError as exc:
            raise ProviderBadResponse(f"the provider's event stream is malformed: {exc}") from None
        for event in events:
            self._read(event)
            if self._result is not None:
                return True
        return False

    def result(self) -> GenerationResult:
        if self._result is None:
            raise ProviderAmbiguous(
                "the provider's stream ended before its final image", code="provider_disconnected", status=200
            )
        return self._result

    def _read(self, event: ServerSentEvent) -> None:
        if event.data.startswith("[DONE]"):
            return
        try:
            payload = json.loads(event.data)
        except ValueError:
            raise ProviderBadResponse("the provider's stream carried an event that is not JSON") from None
        if not isinstance(payload, dict):
            raise ProviderBadResponse("the provider's stream carried an event darkroom does not know")
        if event.event == "error" or payload.get("error"):
            raise self._error(payload.get("error"))
        kind = payload.get("type") or event.event
        if kind in PARTIAL_EVENTS:
            index = payload.get("partial_image_index")
            if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < self._partial_images:
                self._preview(index, payload)
        elif kind in COMPLETED_EVENTS:
            revised = payload.get("revised_prompt")
            self._result = GenerationResult(
                images=[_image(payload)],
                usage=token_counts(payload.get("usage")),
                revised_prompts=[revised if isinstance(revised, str) else None],
            )
        # Any other event (a keep-alive, a type added later) carries nothing darkroom uses.

    def _preview(self, index: int, payload: dict[str, Any]) -> None:
        if index in self._handed or self._on_partial is None:
            return
        self._handed.add(index)
        try:
            image = _image(payload)
        except ProviderBadResponse as exc:
            logger.warning("an unreadable preview was passed over", extra={"index": index, "reason": exc.message})
            return
        self._on_partial(index, image)

    def _error(self, error: Any) -> ProviderRefused | ProviderAmbiguous:
        error = error if isinstance(error, dict) else {}
        code, message = str(error.get("code") or ""), redact(str(error.get("message") or ""), self._secrets)
        if code in REFUSAL_CODES:
            return ProviderRefused(message or "the provider refused the image under its content policy", status=200)
        # The render had begun: it may have been billed.
        shown = message or (code if _CODE.fullmatch(code) and redact(code, self._secrets) == code else "no detail")
        return ProviderAmbiguous(
            f"the provider's stream reported an error: {shown}", code="provider_stream_error", status=200
        )


class PreviewHandoff:
    """Hands previews to `on_partial` on a thread of its own, in order, so storing one (S3, DynamoDB) never holds up
    reading the stream. `close` waits a bounded time for those still being stored; one still going after it goes on
    alone (its writes are conditional on the job's lease)."""

    def __init__(self, on_partial: OnPartial) -> None:
        self._on_partial = on_partial
        self._queue: queue.Queue[tuple[int, bytes] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def put(self, index: int, data: bytes) -> None:
        if self._thread is None:
            # The invocation's context goes along: its log keys, as everything else the call logs.
            context = contextvars.copy_context()
            self._thread = threading.Thread(target=context.run, args=(self._run,), name="previews", daemon=True)
            self._thread.start()
        self._queue.put((index, data))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._on_partial(*item)
            except Exception:
                logger.warning("a preview could not be handed on", exc_info=True, extra={"index": item[0]})

    def close(self, wait_s: float) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(wait_s)


def _image(payload: dict[str, Any]) -> bytes:
    encoded = payload.get("b64_json")
    if not isinstance(encoded, str) or not encoded:
        raise ProviderBadResponse("the provider's stream carried an image event without an image")
    try:
        image = binascii.a2b_base64(encoded, strict_mode=True)
    except binascii.Error:
        raise ProviderBadResponse("the provider's stream carried an image that is not base64") from None
    if len(image) > MAX_IMAGE_BYTES:
        raise ProviderBadResponse("the provider answered with an image larger than any darkroom asks for")
    return image
