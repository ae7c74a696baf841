"""OpenAI's ImagesResponse, read as it streams in: each `b64_json` decoded on the fly, one image at a time.

The largest answer the catalog allows (n=10 at 3840x2160 PNG) is hundreds of MiB of base64. Reading it whole, then
parsing it, then decoding it held three copies at once (990 MiB peak measured against a 1024 MB worker). Here the
encoded text is never kept: every `"b64_json": "..."` value is decoded as its chunks arrive and replaced in the
document by the image's index, so the rest of the answer (usage, revised prompts) stays a few KB and is parsed as
ordinary JSON at the end. Peak memory is the decoded images plus one chunk.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from darkroom.errors import ProviderBadResponse

_KEY = b'"b64_json"'
_WHITESPACE = b" \t\r\n"
# The largest image the catalog allows, 3840x2160 with four channels that do not compress, is a 33.2 MB PNG; ten of
# them are the largest answer. Anything larger is not what darkroom asked for, and the worker's memory is sized for
# this much (bench/worker_memory.py). The rest of an answer (usage, revised prompts) is small.
MAX_IMAGE_BYTES = 40 * 1024 * 1024
MAX_ANSWER_IMAGE_BYTES = 352 * 1024 * 1024
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class GenerationResult:
    images: list[bytes]
    usage: dict[str, Any] | None
    revised_prompts: list[str | None]
    # The per-minute limits the provider's headers announced with the answer (darkroom.ratelimit.announced_limits).
    rate_limits: dict[str, int] = field(default_factory=dict)


class ImagesResponseReader:
    """Feed it the body's chunks in order, then call `result()` (or `document()`, for an answer inside another)."""

    def __init__(self, *, max_images: int = 10) -> None:
        self.max_images = max_images
        self._document = bytearray()  # the answer with every b64_json value replaced by its image index
        self._images: list[bytes] = []
        self._pending = b""  # bytes not yet placed: a possible split key or escape
        self._pending_base64 = b""  # base64 awaiting a whole 4-character quantum
        self._state = "text"  # text -> colon -> quote -> base64 -> text
        self._image = bytearray()
        self._stored = 0  # bytes of the images already complete

    def feed(self, chunk: bytes) -> bool:
        """False: a plain answer is read to its end (the streamed reader's `feed` says when it may stop)."""
        data = self._pending + chunk
        self._pending = b""
        while data:
            data = getattr(self, f"_in_{self._state}")(data)
        if len(self._document) > MAX_DOCUMENT_BYTES:
            raise ProviderBadResponse("the provider's answer is larger than any images answer")
        return False

    def _in_text(self, data: bytes) -> bytes:
        found = data.find(_KEY)
        if found < 0:
            keep = len(_KEY) - 1  # the key may straddle this chunk and the next
            self._document += data[:-keep]
            self._pending = data[-keep:]
            return b""
        self._document += data[: found + len(_KEY)]
        self._state = "colon"
        return data[found + len(_KEY) :]

    def _in_colon(self, data: bytes) -> bytes:
        return self._expect(data, b":", "quote")

    def _in_quote(self, data: bytes) -> bytes:
        return self._expect(data, b'"', "base64")

    def _expect(self, data: bytes, char: bytes, then: str) -> bytes:
        """After the key: white space, then `char`; anything else means `"b64_json"` was not a key after all."""
        stripped = data.lstrip(_WHITESPACE)
        if not stripped:
            return b""
        if stripped[:1] != char:
            self._state = "text"
            return stripped
        if char == b":":
            self._document += b":"
        self._state = then
        return stripped[1:]

    def _in_base64(self, data: bytes) -> bytes:
        end = data.find(b'"')
        text, rest = (data, b"") if end < 0 else (data[:end], data[end + 1 :])
        if b"\\" in text:
            if end < 0 and text.endswith(b"\\"):  # an escape split across chunks
                text, self._pending = text[:-1], b"\\"
            text = text.replace(b"\\/", b"/")  # JSON may escape '/', the only escape base64 can need
            if b"\\" in text:
                raise ProviderBadResponse("the provider's answer had no readable images")
        encoded = self._pending_base64 + text
        whole = len(encoded) // 4 * 4
        try:
            self._image += binascii.a2b_base64(encoded[:whole], strict_mode=True)
        except binascii.Error:
            raise ProviderBadResponse("the provider's answer had no readable images") from None
        self._pending_base64 = encoded[whole:]
        if len(self._image) > MAX_IMAGE_BYTES:
            raise ProviderBadResponse("the provider answered with an image larger than any darkroom asks for")
        if self._stored + len(self._image) > MAX_ANSWER_IMAGE_BYTES:
            raise ProviderBadResponse("the provider answered with more image bytes than any request can produce")
        if end >= 0:
            self._close_image()
        return rest

    def _close_image(self) -> None:
        if self._pending_base64 or not self._image:
            raise ProviderBadResponse("the provider's answer had no readable images")
        if len(self._images) >= self.max_images:
            raise ProviderBadResponse("the provider answered with more images than were asked for")
        self._document += str(len(self._images)).encode()
        self._images.append(bytes(self._image))
        self._stored += len(self._image)
        self._image = bytearray()
        self._state = "text"

    def result(self) -> GenerationResult:
        return generation_result(*self.document())

    def document(self) -> tuple[Any, list[bytes]]:
        """The whole answer parsed, each `b64_json` value replaced by its image's index, and the images: for answers
        that hold an ImagesResponse inside something else (a Batch API results line holds it as `response.body`)."""
        if self._state != "text":
            raise ProviderBadResponse("the provider's answer ended inside an image")
        self._document += self._pending
        self._pending = b""
        try:
            return json.loads(self._document), self._images
        except (ValueError, RecursionError):
            raise ProviderBadResponse("the provider's answer had no readable images") from None


def generation_result(body: Any, images: list[bytes]) -> GenerationResult:
    """An ImagesResponse as `ImagesResponseReader.document()` gives it: its `data` must name every image, in order."""
    try:
        data = body["data"]
        indexes = [item["b64_json"] for item in data]
    except (KeyError, TypeError):
        raise ProviderBadResponse("the provider's answer had no readable images") from None
    if not data:
        raise ProviderBadResponse("the provider answered with no images")
    if indexes != list(range(len(images))):
        raise ProviderBadResponse("the provider's answer had no readable images")
    usage = token_counts(body.get("usage"))
    prompts = [item.get("revised_prompt") if isinstance(item, dict) else None for item in data]
    return GenerationResult(
        images=images,
        usage=usage,
        revised_prompts=[p if isinstance(p, str) else None for p in prompts],
    )


# The counts darkroom prices and shows. Anything else a provider puts in `usage` (NaN, 1e999, half a megabyte of
# text) would be stored on the job and served back, or make its record too large to write, after the call billed.
_COUNTS = ("input_tokens", "output_tokens", "total_tokens")
_DETAIL_COUNTS = ("text_tokens", "image_tokens", "cached_tokens")
_MAX_COUNT = 10**12


def token_counts(usage: Any) -> dict[str, Any] | None:
    """The documented token counts of a `usage` block, each a whole number; None when there are none."""
    if not isinstance(usage, dict):
        return None
    kept: dict[str, Any] = {name: usage[name] for name in _COUNTS if _is_count(usage.get(name))}
    for name in ("input_tokens_details", "output_tokens_details"):
        details = usage.get(name)
        if isinstance(details, dict):
            counts = {key: details[key] for key in _DETAIL_COUNTS if _is_count(details.get(key))}
            if counts:
                kept[name] = counts
    return kept or None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_COUNT


def read_images_response(chunks: Any, *, max_images: int = 10) -> GenerationResult:
    """The whole answer from an iterable of byte chunks (tests, and bodies already in memory)."""
    reader = ImagesResponseReader(max_images=max_images)
    for chunk in chunks:
        reader.feed(chunk)
    return reader.result()
