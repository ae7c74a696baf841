"""The emulator's `POST /v1/moderations`: OpenAI's moderation endpoint, as far as darkroom uses it.

It takes `model` (an omni or text moderation model) and `input`: a string, a list of strings (one result each), or a
list of parts (`{"type": "text", "text"}`, `{"type": "image_url", "image_url": {"url"}}`, one result for all). It
answers OpenAI's shape: `results[]` with `flagged`, `categories`, `category_scores` and
`category_applied_input_types`.

What it flags, for tests to ask for: a text containing `[flag]` (as `violence`) or `[flag:CATEGORY]`; an image (a
data URL, or a link the emulator downloads) whose top-left pixel is pure red (as `violence/graphic`).
"""

from __future__ import annotations

import base64
import io
import re
import secrets
import urllib.request
from collections.abc import Iterator
from typing import Any

MODELS = ("omni-moderation-latest", "omni-moderation-2024-09-26", "text-moderation-latest", "text-moderation-stable")
CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
TEXT_FLAG = re.compile(r"\[flag(?::([a-z/-]+))?\]")
FLAGGED_PIXEL = (255, 0, 0)
IMAGE_FETCH_LIMIT = 50 * 1024 * 1024


class ModerationInputError(ValueError):
    """The request is not one OpenAI would take: a 400 naming the parameter."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def moderate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ModerationInputError("The body must be a JSON object.", "input")
    model = body.get("model", "omni-moderation-latest")
    if model not in MODELS:
        raise ModerationInputError(f"Invalid model '{model}'.", "model")
    groups = list(_groups(body.get("input")))
    if any(kind == "image" for group in groups for kind, _ in group) and not str(model).startswith("omni"):
        raise ModerationInputError(f"{model} takes text only.", "input")
    return {"id": f"modr-{secrets.token_hex(12)}", "model": model, "results": [_result(group) for group in groups]}


def _groups(value: Any) -> Iterator[list[tuple[str, str]]]:
    """The inputs as (kind, text or url) lists, one list per result."""
    if isinstance(value, str):
        yield [("text", value)]
    elif isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        for item in value:
            yield [("text", item)]
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        yield [_part(item) for item in value]
    else:
        raise ModerationInputError("input must be a string, a list of strings, or a list of parts.", "input")


def _part(item: dict[str, Any]) -> tuple[str, str]:
    if item.get("type") == "text" and isinstance(item.get("text"), str):
        return "text", item["text"]
    url = (item.get("image_url") or {}).get("url") if isinstance(item.get("image_url"), dict) else None
    if item.get("type") == "image_url" and isinstance(url, str):
        return "image", url
    raise ModerationInputError("Each part is {type: text, text} or {type: image_url, image_url: {url}}.", "input")


def _result(group: list[tuple[str, str]]) -> dict[str, Any]:
    applied: dict[str, list[str]] = {}
    for kind, value in group:
        for category in _text_flags(value) if kind == "text" else _image_flags(value):
            applied.setdefault(category, [])
            if kind not in applied[category]:
                applied[category].append(kind)
    return {
        "flagged": bool(applied),
        "categories": {name: name in applied for name in CATEGORIES},
        "category_scores": {name: 0.97 if name in applied else 0.0004 for name in CATEGORIES},
        "category_applied_input_types": {name: applied.get(name, []) for name in CATEGORIES},
    }


def _text_flags(text: str) -> set[str]:
    return {
        match.group(1) or "violence"
        for match in TEXT_FLAG.finditer(text)
        if (match.group(1) or "violence") in CATEGORIES
    }


def _image_flags(url: str) -> set[str]:
    from PIL import Image

    data = _image_bytes(url)
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixel = image.convert("RGB").getpixel((0, 0))
    except Exception:
        raise ModerationInputError("The image could not be read.", "input") from None
    return {"violence/graphic"} if pixel == FLAGGED_PIXEL else set()


def _image_bytes(url: str) -> bytes:
    if url.startswith("data:"):
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=True)
        except (IndexError, ValueError):
            raise ModerationInputError("The image's data URL is not base64.", "input") from None
    if not url.startswith(("http://", "https://")):
        raise ModerationInputError("An image must be a data URL or an http(s) link.", "input")
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return bytes(answer.read(IMAGE_FETCH_LIMIT))
    except OSError:
        raise ModerationInputError("The image could not be downloaded.", "input") from None
