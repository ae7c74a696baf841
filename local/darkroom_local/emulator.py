"""A stand-in for OpenAI's Images API: real images from Pillow, OpenAI's usage and error shapes, and faults on demand.

Endpoints: POST /v1/images/generations (JSON), POST /v1/images/edits (multipart, as the openai SDK sends it), and
WaveSpeedAI's asynchronous submit-then-poll API (darkroom_local.wavespeed_emulator) with the same auth, latency and
faults; its submissions are counted per prompt alongside the generations. OpenAI's Files and Batch APIs (POST
/v1/files, GET /v1/files/{id}[/content], POST /v1/batches, GET /v1/batches[/{id}], POST /v1/batches/{id}/cancel:
darkroom_local.batch_emulator) with the same auth and faults, each batch line run by the rules and renderer below.

It refuses what OpenAI refuses, with OpenAI's status and `{"error": {"message", "type", "param", "code"}}` body,
judged from darkroom's model table (`darkroom.catalog`) but never through darkroom's own request validation, so that
a hole in that validation shows up here as a refused call instead of being mirrored:
- an unknown or retired model: 404 `model_not_found`;
- sizes: `auto` and the standard sizes for every model; a custom WxH only on models with flexible sizes, within the
  table's limits (multiples of 16, long edge, aspect ratio, pixel count);
- qualities per model (DALL-E's `standard`/`hd` nowhere), output formats png/jpeg/webp, a transparent background
  only as png or webp and only on models that offer it, output_compression 0-100 for jpeg/webp only, n 1-10,
  moderation low/auto, complexity low/medium/high, a prompt of 1 to 32,000 characters;
- DALL-E's `response_format` and `style` as unsupported parameters; anything else it does not know as an unknown
  parameter;
- streaming: `stream` a boolean, `partial_images` 0 to 3 and only with `stream`, and one image per stream (`n` 1);
- edits: 1 to 16 `image`/`image[]` parts, each png, webp or jpeg as Pillow reads its bytes (the part's content type is
  never trusted) and under 50 MB; an optional `mask`, a PNG under 4 MB with an alpha channel and the first image's
  width and height; `input_fidelity` only on models whose table entry allows it; `markup` only on models that
  understand it, and never with a mask.
Every refusal names its parameter in `param`. A refused request is answered at once: no latency, no fault, no
generation, as a provider bills nothing for a request it rejects.

A streamed request (`stream: true`) is answered with server-sent events as OpenAI sends them: `partial_images`
`image_generation.partial_image` events (`image_edit.partial_image` for edits), each the final image at a coarser
resolution that sharpens towards it, spread evenly over the configured latency, then `image_generation.completed`
with the final image and its usage (OpenAI's 100 extra output tokens per preview included). A prompt containing
`[cut]` is billed and its stream cut after the first preview.

Test hooks:
- GET /_emulator/calls: the provider's view of billing, per prompt and in total: `requests` received (refused ones
  included), `generations` completed and WaveSpeed `submissions` accepted. A generation is counted when its render
  finishes, before the answer is written, so a client that stopped waiting still shows as billed. Totals also count
  requests that carried no readable prompt. A batch line counts once, when it runs: a request, and if it generated, a
  generation that is also counted as `batched`. Per prompt, `edits` lists each billed edit as
  `{"images", "mask", "markup", "sizes": ["WxH", ...]}`, proof of what reached the provider. `Emulator.calls()`
  returns the same.
- GET /_emulator/stats: calls that passed validation, faults, refusals, successful generations per darkroom job;
- POST /_emulator/reset: clears both, and every uploaded file and batch.

Knobs (environment, read when the emulator starts, shared with the local stack):
- DARKROOM_EMULATOR_LATENCY_MS: added to every accepted call, before its fault draw and render (a slow answer is a
  render that finished late);
- DARKROOM_EMULATOR_FAULT_RATE: 0 to 1, the fraction of calls answered by a fault, an even mix of 429 with
  retry-after, 500, a hang that outlasts the worker's provider timeout (it generates nothing), and a slow answer
  (it renders, and bills, then answers only after the client has given up: the ambiguous call that must never be
  repeated);
- DARKROOM_EMULATOR_HANG_MS: how long a hang or a slow answer waits at most (it ends early when the client gives up);
- DARKROOM_EMULATOR_RETRY_AFTER_S: the retry-after sent with 429s;
- DARKROOM_EMULATOR_TEXTURE: `gradient` (default: small, quick images) or `noise` (images that do not compress, as
  large as a real provider's photographs at worst, for measuring memory and bandwidth);
- DARKROOM_EMULATOR_ASYNC_MS: how long a WaveSpeed prediction takes from submission to its end (default 3000);
- DARKROOM_EMULATOR_BATCH_MS: how long a batch takes from creation to its end (default 2000);
- DARKROOM_EMULATOR_BATCH_OUTCOME: how batches end, `complete` (default), `expire` (half their lines run) or `fail`;
- DARKROOM_EMULATOR_API_KEY: the only key the OpenAI side takes (default: any); another is answered 401
  `invalid_api_key`, quoting part of it as OpenAI does;
- DARKROOM_EMULATOR_IPM: images per minute the key may generate (default 0: no limit). Past it a valid call is
  answered at once with OpenAI's 429 `rate_limit_exceeded`, `retry-after` saying when the window frees enough, and
  the window's `x-ratelimit-*` headers (which every answer then carries); refusals are counted as `limited` in
  /_emulator/stats and nothing is generated.
A prompt containing `[refuse]` is refused as OpenAI refuses content-policy violations (400 `moderation_blocked`).
POST /v1/moderations answers as OpenAI's moderation endpoint, flagging a text with `[flag]` (or `[flag:CATEGORY]`)
and an image whose top-left pixel is pure red (darkroom_local.moderation_emulator).

An edit's visible change, for tests to check: every output is the first image resized to the output size (`auto`
keeps its size), blended halfway to magenta (TINT) exactly where the mask is fully transparent, or everywhere without
a mask; every other pixel is left as it was. Edits carry no text mark, which would land on those pixels.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import random
import re
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from typing import Any

from PIL import Image, ImageDraw

from darkroom import catalog
from darkroom_local import batch_emulator, moderation_emulator
from darkroom_local.http_server import BackgroundHTTPServer
from darkroom_local.rate_limit import ImagesPerMinute
from darkroom_local.wavespeed_emulator import (
    OUTPUT_PATH,
    RESULT_PATH,
    SUBMIT_PATH,
    Prediction,
    WaveSpeedError,
    WaveSpeedService,
    check_submission,
    envelope,
    fetch_images,
    open_input_image,
)

STANDARD_SIZE = (1024, 1024)
# Output image tokens for a 1024x1024 image by quality; other sizes scale with their area.
TOKENS_PER_MEGAPIXEL = {"low": 196, "medium": 1756, "high": 7034, "auto": 1756, "xhigh": 9000, "max": 12000}
REFUSE_MARKER = "[refuse]"
FAULT_KINDS = ("rate_limit", "server_error", "hang", "slow")
TEXTURES = ("gradient", "noise")
# What an edit's output is tinted toward, half way, where the edit applies.
TINT = (255, 0, 255)

# OpenAI's own limits and value sets that darkroom's model table does not hold.
MAX_PROMPT_CHARS = 32_000
MAX_IMAGES = 10
BACKGROUNDS = ("transparent", "opaque", "auto")
MODERATIONS = ("low", "auto")
COMPLEXITIES = ("low", "medium", "high")
COMPRESSION_FORMATS = ("jpeg", "webp")
TRANSPARENT_FORMATS = ("png", "webp")
# Written here rather than taken from the catalog's parser, so the two can disagree and a test can notice.
CUSTOM_SIZE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")
# Form fields arrive as text; ASCII digits only (int() would also take "١٢" or " 2").
FORM_INTEGER = re.compile(r"-?[0-9]{1,6}")

GENERATION_PARAMETERS = frozenset(
    {
        "prompt",
        "model",
        "n",
        "size",
        "quality",
        "background",
        "output_format",
        "output_compression",
        "moderation",
        "complexity",
        "safety_identifier",
        "user",
        "stream",
        "partial_images",
    }
)
# Edits also take image/image[]/mask/markup, which arrive as file parts rather than fields.
EDIT_PARAMETERS = GENERATION_PARAMETERS | {"input_fidelity"}
FILE_PARTS = ("image", "image[]", "mask", "markup")
# Known to OpenAI, refused here with a reason that names them.
UNSUPPORTED_PARAMETERS = {
    "response_format": "GPT image models always return base64-encoded images; response_format was for DALL-E.",
    "style": "style was for DALL-E 3; describe the style in the prompt instead.",
}
CUT_MARKER = "[cut]"
# What OpenAI bills for each preview of a streamed image, in output image tokens.
PARTIAL_IMAGE_TOKENS = 100
MAX_PARTIAL_IMAGES = 3


@dataclass
class EmulatorConfig:
    latency_ms: int = 0
    fault_rate: float = 0.0
    hang_ms: int = 600_000
    retry_after_s: float = 1.0
    seed: int | None = None
    # Which faults the fault rate draws from (tests narrow it to one kind).
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    texture: str = "gradient"
    # How long a WaveSpeed prediction takes from submission to its end.
    async_ms: int = 3000
    # Images per minute the emulator's key may generate (0: no limit); past it, 429 as OpenAI answers.
    ipm: int = 0
    # The one key the OpenAI side takes (None: any non-empty key); another is answered 401 as OpenAI answers it.
    api_key: str | None = None
    # How long a batch takes from creation to its end, and how it ends: complete, expire or fail.
    batch_ms: int = 2000
    batch_outcome: str = "complete"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> EmulatorConfig:
        env = dict(os.environ) if env is None else env
        return cls(
            latency_ms=int(env.get("DARKROOM_EMULATOR_LATENCY_MS", "0")),
            fault_rate=float(env.get("DARKROOM_EMULATOR_FAULT_RATE", "0")),
            hang_ms=int(env.get("DARKROOM_EMULATOR_HANG_MS", "600000")),
            retry_after_s=float(env.get("DARKROOM_EMULATOR_RETRY_AFTER_S", "1")),
            texture=env.get("DARKROOM_EMULATOR_TEXTURE", "gradient"),
            async_ms=int(env.get("DARKROOM_EMULATOR_ASYNC_MS", "3000")),
            ipm=int(env.get("DARKROOM_EMULATOR_IPM", "0")),
            api_key=env.get("DARKROOM_EMULATOR_API_KEY") or None,
            batch_ms=int(env.get("DARKROOM_EMULATOR_BATCH_MS", "2000")),
            batch_outcome=env.get("DARKROOM_EMULATOR_BATCH_OUTCOME", "complete"),
        )


@dataclass
class CallCount:
    """What the provider saw of one prompt (or of all): requests received, generations completed."""

    requests: int = 0
    generations: int = 0
    # Asynchronous predictions accepted (WaveSpeed's API): each one is billed, whatever becomes of it.
    submissions: int = 0
    # Generations made by a Batch API line, also counted in `generations`.
    batched: int = 0


@dataclass
class PromptCount(CallCount):
    # One entry per billed edit (see edit_report); kept per prompt only, as the totals would grow without bound.
    edits: list[dict[str, Any]] = field(default_factory=list)


def edit_report(images: list[Image.Image], *, mask: bool, markup: bool) -> dict[str, Any]:
    """What one edit handed the provider: enough for a test to prove the images and the mask arrived."""
    return {
        "images": len(images),
        "mask": mask,
        "markup": markup,
        "sizes": [f"{image.width}x{image.height}" for image in images],
    }


@dataclass
class EmulatorStats:
    # Calls that passed validation and went on to latency, a fault draw and a render.
    calls: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    refusals: int = 0
    # Calls answered 429 because the images-per-minute limit (DARKROOM_EMULATOR_IPM) was reached.
    limited: int = 0
    # Moderation checks answered (POST /v1/moderations), and the results among them that were flagged.
    moderations: int = 0
    moderations_flagged: int = 0
    # When each call within the limit was admitted (monotonic seconds) and its images: how evenly a limit was used.
    admitted: list[tuple[float, int]] = field(default_factory=list)
    # Successful generations per darkroom job (from X-Client-Request-Id "job:attempt"), or per call without one.
    generations: Counter[str] = field(default_factory=Counter)
    # The provider's billing view, keyed by prompt text.
    prompts: dict[str, PromptCount] = field(default_factory=dict)
    totals: CallCount = field(default_factory=CallCount)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "calls": self.calls,
                "faults": dict(self.faults),
                "refusals": self.refusals,
                "limited": self.limited,
                "moderations": self.moderations,
                "moderations_flagged": self.moderations_flagged,
                "generations": dict(self.generations),
            }

    def calls_by_prompt(self) -> dict[str, Any]:
        with self.lock:
            return {
                "prompts": {prompt: asdict(count) for prompt, count in self.prompts.items()},
                "totals": asdict(self.totals),
            }

    def count_request(self, prompt: object) -> None:
        with self.lock:
            self.totals.requests += 1
            if isinstance(prompt, str):
                self.prompts.setdefault(prompt, PromptCount()).requests += 1

    def count_generation(self, prompt: str, job_key: str, edit: dict[str, Any] | None = None) -> None:
        with self.lock:
            self.generations[job_key or f"call-{self.calls}"] += 1
            count = self.prompts.setdefault(prompt, PromptCount())
            count.generations += 1
            if edit is not None:
                count.edits.append(edit)
            self.totals.generations += 1

    def count_batched(self, prompt: str) -> None:
        with self.lock:
            self.prompts.setdefault(prompt, PromptCount()).batched += 1
            self.totals.batched += 1

    def count_submission(self, prompt: str) -> None:
        with self.lock:
            self.prompts.setdefault(prompt, PromptCount()).submissions += 1
            self.totals.submissions += 1


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str,
        code: str | None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        self.headers = headers or {}


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, type_="invalid_request_error", code=code, param=param)


@dataclass(frozen=True)
class ImageRequest:
    """A request that passed every rule, with OpenAI's defaults filled in."""

    prompt: str
    model: str
    n: int
    size: str
    quality: str
    background: str
    output_format: str
    output_compression: int | None
    stream: bool = False
    partial_images: int = 0


def check_request(params: dict[str, Any], *, edit: bool) -> ImageRequest:
    """The request as OpenAI would take it, or the first rule it breaks as OpenAI would report it."""
    known = EDIT_PARAMETERS if edit else GENERATION_PARAMETERS
    for name in params:
        if name not in known and name not in UNSUPPORTED_PARAMETERS:
            raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    for name, reason in UNSUPPORTED_PARAMETERS.items():
        value = params.get(name)
        if value is None:
            continue
        raise invalid(f"Unsupported parameter: '{name}'. {reason}", name, "unsupported_parameter")
    prompt = _prompt(params)
    model = _string(params, "model", catalog.DEFAULT_MODEL)
    spec = catalog.MODELS.get(model)
    # OpenAI answers a model id it does not serve with 404 model_not_found, and a shut-down model no longer
    # answers at all, so a retired one gets the same 404 (checked on its own in case the table ever lists it
    # among the live ones). darkroom's adapter must treat this 404 as final; `param` is set, unlike OpenAI's
    # null, so that tests and logs can see which field was at fault.
    if spec is None or model in catalog.RETIRED_MODELS:
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            type_="invalid_request_error",
            code="model_not_found",
            param="model",
        )
    n = _integer(params, "n", 1, 1, MAX_IMAGES)
    size = _string(params, "size", "auto")
    _check_size(size, spec)
    quality = _choice(params, "quality", "auto", spec.qualities)
    output_format = _choice(params, "output_format", "png", catalog.OUTPUT_FORMATS)
    background = _choice(params, "background", "auto", BACKGROUNDS)
    if background == "transparent" and output_format not in TRANSPARENT_FORMATS:
        raise invalid(
            f"Transparent background is not supported with output_format '{output_format}'; use png or webp.",
            "background",
        )
    if background == "transparent" and not spec.transparent_background:
        raise invalid(f"Transparent background is not supported for model {model}.", "background")
    compression = None
    if params.get("output_compression") is not None:
        compression = _integer(params, "output_compression", 100, 0, 100)
        if output_format not in COMPRESSION_FORMATS:
            raise invalid(
                f"output_compression is only supported for jpeg and webp, not '{output_format}'.",
                "output_compression",
            )
    _choice(params, "moderation", "auto", MODERATIONS)
    _choice(params, "complexity", "medium", COMPLEXITIES)
    for name in ("safety_identifier", "user"):
        _string(params, name, "")
    # Only edits get this far with it (a generation refuses it as unknown).
    if params.get("input_fidelity") is not None:
        if not spec.input_fidelities:
            raise invalid(
                f"Unsupported parameter: 'input_fidelity' is not supported with model {model}.",
                "input_fidelity",
                "unsupported_parameter",
            )
        _choice(params, "input_fidelity", "low", spec.input_fidelities)
    stream, partial_images = _streaming(params, n)
    return ImageRequest(prompt, model, n, size, quality, background, output_format, compression, stream, partial_images)


def _streaming(params: dict[str, Any], n: int) -> tuple[bool, int]:
    """`stream` and `partial_images`, which only a stream takes."""
    stream = params.get("stream", False)
    if not isinstance(stream, bool):
        raise _wrong_type("stream", "a boolean", stream)
    partial_images = _integer(params, "partial_images", 0, 0, MAX_PARTIAL_IMAGES)
    if params.get("partial_images") is not None and not stream:
        raise invalid("partial_images is only supported when stream is true.", "partial_images")
    if stream and n != 1:
        raise invalid("Streaming returns one image: n must be 1 when stream is true.", "n")
    return stream, partial_images


@dataclass(frozen=True)
class EditInputs:
    """An edit's files as OpenAI would take them: the images decoded, and the mask as its alpha channel."""

    images: list[Image.Image]
    mask: Image.Image | None
    markup: bool

    def report(self) -> dict[str, Any]:
        return edit_report(self.images, mask=self.mask is not None, markup=self.markup)


def check_edit(request: ImageRequest, files: Mapping[str, list[bytes]]) -> EditInputs:
    """An edit's image, mask and markup parts as OpenAI would take them, or the first rule they break."""
    spec = catalog.MODELS[request.model]
    parts = [*files.get("image", []), *files.get("image[]", [])]
    if not parts:
        raise invalid("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    if len(parts) > catalog.MAX_EDIT_IMAGES:
        raise invalid(
            f"Invalid 'image': array too long. Expected at most {catalog.MAX_EDIT_IMAGES} images, "
            f"but got {len(parts)} instead.",
            "image",
            "array_above_max_length",
        )
    masks, markups = files.get("mask", []), files.get("markup", [])
    if markups and not spec.markup:
        raise invalid(
            f"Unsupported parameter: 'markup' is not supported with model {request.model}.",
            "markup",
            "unsupported_parameter",
        )
    if markups and masks:
        raise invalid("'markup' cannot be combined with 'mask'; send one or the other.", "markup")
    images = [_input_image(payload, index) for index, payload in enumerate(parts)]
    mask = _mask_alpha(masks[0], images[0]) if masks else None
    return EditInputs(images, mask, bool(markups))


def _input_image(payload: bytes, index: int) -> Image.Image:
    if len(payload) >= catalog.MAX_INPUT_IMAGE_BYTES:
        raise invalid(
            f"Invalid 'image' (file {index + 1}): each image must be under "
            f"{catalog.MAX_INPUT_IMAGE_BYTES // (1024 * 1024)} MB.",
            "image",
            "image_too_large",
        )
    try:
        return open_input_image(payload)
    except ValueError:
        raise invalid(
            f"Invalid 'image' (file {index + 1}): unsupported image format. Supported formats are "
            f"{_listed(catalog.INPUT_FORMATS)}.",
            "image",
            "invalid_image_format",
        ) from None


def _mask_alpha(payload: bytes, first: Image.Image) -> Image.Image:
    """The mask's alpha channel: 0 marks what to edit."""
    if len(payload) >= catalog.MAX_MASK_BYTES:
        raise invalid(
            f"Invalid 'mask': it must be under {catalog.MAX_MASK_BYTES // (1024 * 1024)} MB.", "mask", "image_too_large"
        )
    try:
        mask = open_input_image(payload, formats=("PNG",))
    except ValueError:
        raise invalid("Invalid 'mask': it must be a PNG image.", "mask", "invalid_image_format") from None
    if "A" not in mask.getbands() and "transparency" not in mask.info:
        raise invalid(
            f"Invalid 'mask': it needs an alpha channel (fully transparent pixels mark what to edit); "
            f"got mode {mask.mode}.",
            "mask",
        )
    if mask.size != first.size:
        raise invalid(
            f"Invalid 'mask': it is {mask.width}x{mask.height} but must match the first image, "
            f"{first.width}x{first.height}.",
            "mask",
        )
    return mask.convert("RGBA").getchannel("A")


def _prompt(params: dict[str, Any]) -> str:
    prompt = params.get("prompt")
    if prompt is None:
        raise invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if not isinstance(prompt, str):
        raise _wrong_type("prompt", "a string", prompt)
    if not prompt:
        raise invalid(
            "Invalid 'prompt': empty string. Expected a string with minimum length 1, but got an empty string instead.",
            "prompt",
            "empty_string",
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise invalid(
            f"Invalid 'prompt': string too long. Expected a string with maximum length {MAX_PROMPT_CHARS}, "
            f"but got a string with length {len(prompt)} instead.",
            "prompt",
            "string_above_max_length",
        )
    return prompt


def _string(params: dict[str, Any], name: str, default: str) -> str:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _wrong_type(name, "a string", value)
    return value


def _choice(params: dict[str, Any], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = _string(params, name, default)
    if value not in allowed:
        raise invalid(f"Invalid value: '{value}'. Supported values are: {_listed(allowed)}.", name)
    return value


def _integer(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(name, "an integer", value)
    if value < low:
        raise invalid(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, but got {value} instead.",
            name,
            "integer_below_min_value",
        )
    if value > high:
        raise invalid(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, but got {value} instead.",
            name,
            "integer_above_max_value",
        )
    return value


def _wrong_type(name: str, expected: str, value: object) -> ApiError:
    kinds = {bool: "a boolean", int: "an integer", float: "a decimal", str: "a string", list: "an array"}
    got = kinds.get(type(value), "an object")
    return invalid(f"Invalid type for '{name}': expected {expected}, but got {got} instead.", name, "invalid_type")


def _listed(values: tuple[str, ...]) -> str:
    quoted = [f"'{value}'" for value in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])}, and {quoted[-1]}"


def _check_size(size: str, spec: catalog.ModelSpec) -> None:
    fixed = ("auto", *catalog.STANDARD_SIZES)
    if size in fixed:
        return
    if not spec.flexible_sizes:
        raise invalid(f"Invalid value: '{size}'. Supported values for {spec.name} are: {_listed(fixed)}.", "size")
    match = CUSTOM_SIZE.fullmatch(size)
    if match is None:
        raise invalid(f"Invalid size '{size}': expected 'auto' or WIDTHxHEIGHT such as '1536x1024'.", "size")
    width, height = int(match.group(1)), int(match.group(2))
    long_edge, short_edge = max(width, height), min(width, height)
    if width % catalog.SIZE_MULTIPLE or height % catalog.SIZE_MULTIPLE:
        problem = f"width and height must both be multiples of {catalog.SIZE_MULTIPLE}"
    elif long_edge > catalog.MAX_EDGE:
        problem = f"the longer side must be at most {catalog.MAX_EDGE} pixels"
    elif long_edge > catalog.MAX_ASPECT * short_edge:
        problem = f"the aspect ratio must be between 1:{catalog.MAX_ASPECT} and {catalog.MAX_ASPECT}:1"
    elif not catalog.MIN_PIXELS <= width * height <= catalog.MAX_PIXELS:
        problem = f"the total pixel count must be between {catalog.MIN_PIXELS} and {catalog.MAX_PIXELS}"
    else:
        return
    raise invalid(f"Invalid size '{size}': {problem}.", "size")


def render_image(
    width: int,
    height: int,
    fmt: str,
    *,
    background: str,
    compression: int | None,
    seed: str,
    texture: str = "gradient",
) -> bytes:
    """A real image of the requested size and format: a gradient or noise, a mark, and the seed."""
    rng = random.Random(seed)
    transparent = background == "transparent"
    mode = "RGBA" if transparent else "RGB"
    if texture == "noise":
        image = Image.frombytes(mode, (width, height), rng.randbytes(width * height * len(mode)))
    elif transparent:
        image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    else:
        top = tuple(rng.randrange(256) for _ in range(3))
        gradient = Image.linear_gradient("L").resize((width, height))
        image = Image.composite(
            Image.new("RGB", (width, height), top), Image.new("RGB", (width, height), (20, 20, 30)), gradient
        )
    draw = ImageDraw.Draw(image)
    box = (width // 4, height // 4, 3 * width // 4, 3 * height // 4)
    draw.ellipse(box, fill=(*(rng.randrange(256) for _ in range(3)), 255))
    draw.text((10, 10), f"darkroom emulator {width}x{height}", fill=(255, 255, 255, 255))
    return _encode(image, fmt, compression)


def render_edit(
    source: Image.Image,
    width: int,
    height: int,
    fmt: str,
    *,
    background: str,
    compression: int | None,
    mask: Image.Image | None,
) -> bytes:
    """The source resized, tinted half way to TINT where `mask` (an alpha channel) is 0, or everywhere without one;
    nothing else changes, so a test can tell edited pixels from kept ones."""
    size = (width, height)
    image = source.convert("RGBA" if background == "transparent" else "RGB").resize(size)
    kept = image.convert("RGB")
    edited = Image.blend(kept, Image.new("RGB", size, TINT), 0.5)
    if mask is not None:
        # Nearest neighbour keeps the hole's edge crisp: an interpolated edge would be partly tinted.
        hole = mask.resize(size, Image.Resampling.NEAREST).point(lambda alpha: 255 if alpha == 0 else 0)
        edited = Image.composite(edited, kept, hole)
    if image.mode == "RGBA":
        edited.putalpha(image.getchannel("A"))  # the tint is a colour change; transparency stays the source's
    return _encode(edited, fmt, compression)


def _encode(image: Image.Image, fmt: str, compression: int | None) -> bytes:
    out = io.BytesIO()
    quality = 100 if compression is None else max(1, compression)
    if fmt == "png":
        image.save(out, "PNG", compress_level=1)
    elif fmt == "webp":
        image.save(out, "WEBP", quality=quality)
    else:
        image.convert("RGB").save(out, "JPEG", quality=min(95, quality))
    return out.getvalue()


def output_tokens(width: int, height: int, quality: str) -> int:
    return max(16, round(TOKENS_PER_MEGAPIXEL.get(quality, 1756) * width * height / (1024 * 1024)))


def output_size(size: str, source: Image.Image | None) -> tuple[int, int]:
    """Pixels for a size that passed the rules: `auto` keeps an edited image's size."""
    if size == "auto":
        return source.size if source is not None else STANDARD_SIZE
    width, height = size.split("x")
    return int(width), int(height)


def coarse_preview(final: bytes, request: ImageRequest, *, steps: int) -> bytes:
    """The final image at 1/2**(steps+1) of its resolution, blown back up: each later preview is sharper."""
    image = Image.open(io.BytesIO(final))
    image.load()
    factor = 2 ** (steps + 1)
    small = image.resize((max(1, image.width // factor), max(1, image.height // factor)), Image.Resampling.BILINEAR)
    blocky = small.resize(image.size, Image.Resampling.NEAREST)
    return _encode(blocky, request.output_format, request.output_compression)


def _with_previews(answer: dict[str, Any], previews: int) -> dict[str, Any]:
    """The answer's usage with what its previews cost added to the output image tokens."""
    usage = json.loads(json.dumps(answer["usage"]))
    extra = PARTIAL_IMAGE_TOKENS * previews
    usage["output_tokens"] += extra
    usage["output_tokens_details"]["image_tokens"] += extra
    usage["total_tokens"] += extra
    return usage


class Emulator(BackgroundHTTPServer):
    thread_name = "emulator"

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        super().__init__()
        self.handler = _RequestHandler
        self.config = config or EmulatorConfig.from_env()
        self.stats = EmulatorStats()
        self._random = random.Random(self.config.seed)
        self._fault_round: list[str] = []
        self.stopping = threading.Event()
        self.wavespeed = self._wavespeed_service()
        self.limiter = ImagesPerMinute(self.config.ipm)
        self.batches = batch_emulator.BatchStore(self)
        # Told (X-Client-Request-Id, outcome) for every accepted call: the local stack's trail of a job.
        self.observer: Callable[[str, str], None] | None = None

    def observe(self, request_id: str, outcome: str) -> None:
        if self.observer is not None and request_id:
            self.observer(request_id, outcome)

    def stop(self) -> None:
        self.stopping.set()
        super().stop()

    def reset(self) -> None:
        self.stats = EmulatorStats()
        self.wavespeed = self._wavespeed_service()
        self.limiter = ImagesPerMinute(self.config.ipm)
        self.batches = batch_emulator.BatchStore(self)

    def admit(self, images: int) -> None:
        """Count the images against the per-minute limit, or refuse the call with a 429 saying when to come back."""
        wait_s = self.limiter.take(images)
        if wait_s is None:
            if self.limiter.limit:
                with self.stats.lock:
                    self.stats.admitted.append((time.monotonic(), images))
            return
        with self.stats.lock:
            self.stats.limited += 1
        raise ApiError(
            429,
            f"Rate limit reached for images per minute: limit {self.limiter.limit}. Please try again in {wait_s:.3f}s.",
            type_="requests",
            code="rate_limit_exceeded",
            headers={
                "retry-after": f"{math.ceil(wait_s * 1000) / 1000:g}",
                "retry-after-ms": str(math.ceil(wait_s * 1000)),
                **self.limiter.headers(),
            },
        )

    def moderate(self, body: Any) -> dict[str, Any]:
        """`POST /v1/moderations` (darkroom_local.moderation_emulator); counted, never billed."""
        try:
            answer = moderation_emulator.moderate(body)
        except moderation_emulator.ModerationInputError as exc:
            raise ApiError(400, str(exc), type_="invalid_request_error", code=None, param=exc.param) from None
        with self.stats.lock:
            self.stats.moderations += 1
            self.stats.moderations_flagged += sum(1 for result in answer["results"] if result["flagged"])
        return answer

    def _wavespeed_service(self) -> WaveSpeedService:
        def render(prediction: Prediction) -> bytes:
            if prediction.sources:  # WaveSpeed's edit takes no mask: the whole first image is edited
                return render_edit(
                    prediction.sources[0],
                    prediction.width,
                    prediction.height,
                    prediction.output_format,
                    background="auto",
                    compression=None,
                    mask=None,
                )
            return render_image(
                prediction.width,
                prediction.height,
                prediction.output_format,
                background="auto",
                compression=None,
                seed=f"{prediction.prompt}:0",
                texture=self.config.texture,
            )

        def count_generation(prediction: Prediction) -> None:
            sources = prediction.sources
            edit = edit_report(sources, mask=False, markup=False) if sources else None
            self.stats.count_generation(prediction.prompt, f"wavespeed:{prediction.prompt}", edit)

        return WaveSpeedService(render, count_generation, self.config.async_ms / 1000)

    def calls(self) -> dict[str, Any]:
        """What `GET /_emulator/calls` answers: requests, generations, submissions and edits per prompt, and
        totals."""
        return self.stats.calls_by_prompt()

    def generations_for(self, prompt: str) -> int:
        with self.stats.lock:
            count = self.stats.prompts.get(prompt)
            return count.generations if count else 0

    def pick_fault(self) -> str | None:
        """A fault for this call, at the configured rate. Kinds are dealt from shuffled rounds rather than drawn
        one by one, so every kind appears in any run with as many faults as there are kinds: a random draw left one
        out about one run in fifty."""
        with self.stats.lock:
            if self._random.random() >= self.config.fault_rate:
                return None
            if not self._fault_round or set(self._fault_round) - set(self.config.fault_kinds):
                self._fault_round = self._random.sample(self.config.fault_kinds, len(self.config.fault_kinds))
            return self._fault_round.pop()

    def generate(self, request: ImageRequest, request_id: str, inputs: EditInputs | None = None) -> dict[str, Any]:
        if REFUSE_MARKER in request.prompt:
            with self.stats.lock:
                self.stats.refusals += 1
            raise ApiError(
                400,
                "Your request was rejected by the safety system. Your prompt may contain text that is not allowed.",
                type_="image_generation_user_error",
                code="moderation_blocked",
            )
        sources = inputs.images if inputs else []
        width, height = output_size(request.size, sources[0] if sources else None)
        if inputs:
            edited = render_edit(
                sources[0],
                width,
                height,
                request.output_format,
                background=request.background,
                compression=request.output_compression,
                mask=inputs.mask,
            )
            images = [edited] * request.n
        else:
            images = [
                render_image(
                    width,
                    height,
                    request.output_format,
                    background=request.background,
                    compression=request.output_compression,
                    seed=f"{request.prompt}:{i}",
                    texture=self.config.texture,
                )
                for i in range(request.n)
            ]
        # Billed from here on, whether or not the client is still there to read the answer.
        self.stats.count_generation(request.prompt, request_id.split(":")[0], inputs.report() if inputs else None)
        text_tokens = max(1, len(request.prompt) // 4)
        image_in = sum(output_tokens(*s.size, "low") for s in sources)
        out_tokens = output_tokens(width, height, request.quality) * request.n
        return {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(image).decode()} for image in images],
            "background": "transparent" if request.background == "transparent" else "opaque",
            "output_format": request.output_format,
            "quality": request.quality if request.quality != "auto" else "medium",
            "size": f"{width}x{height}",
            "usage": {
                "input_tokens": text_tokens + image_in,
                "input_tokens_details": {"image_tokens": image_in, "text_tokens": text_tokens},
                "output_tokens": out_tokens,
                "output_tokens_details": {"image_tokens": out_tokens, "text_tokens": 0},
                "total_tokens": text_tokens + image_in + out_tokens,
            },
        }


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def emulator(self) -> Emulator:
        return self.server.owner  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the stack prints its own summary
        pass

    def do_GET(self) -> None:
        if batch_emulator.handles(self.path):
            self._batches(b"")
            return
        if RESULT_PATH.fullmatch(self.path) or OUTPUT_PATH.fullmatch(self.path):
            self._wavespeed_get()
        elif self.path == "/_emulator/stats":
            self._send(200, self.emulator.stats.as_dict())
        elif self.path == "/_emulator/calls":
            self._send(200, self.emulator.calls())
        elif self.path in ("/health", "/v1/models"):
            self._send(200, {"status": "ok"})
        else:
            self._send(
                404,
                {
                    "error": {
                        "message": "Not found",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "not_found",
                    }
                },
            )

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if batch_emulator.handles(self.path):
            self._batches(body)
            return
        if self.path == "/_emulator/reset":
            self.emulator.reset()
            self._send(200, {"reset": True})
            return
        submit = SUBMIT_PATH.fullmatch(self.path)
        if submit:
            self._wavespeed_submit(submit.group(1), submit.group(2), body)
            return
        try:
            self._check_auth()
            if self.path == "/v1/moderations":
                self._send(200, self.emulator.moderate(self._json(body)))
                return
            if self.path not in ("/v1/images/generations", "/v1/images/edits"):
                raise ApiError(404, f"Unknown path {self.path}", type_="invalid_request_error", code="not_found")
            edit = self.path == "/v1/images/edits"
            try:
                params, files = self._multipart(body) if edit else (self._json(body), {})
            except ApiError:
                self.emulator.stats.count_request(None)
                raise
            self.emulator.stats.count_request(params.get("prompt"))
            request = check_request(params, edit=edit)
            inputs = check_edit(request, files) if edit else None
            self.emulator.admit(request.n)  # a refusal above costs no quota; a valid request does
            with self.emulator.stats.lock:
                self.emulator.stats.calls += 1
            if not request.stream:  # a stream spreads its latency between its events
                self._pause(self.emulator.config.latency_ms / 1000)
            request_id = self.headers.get("x-client-request-id", "")
            fault = self._maybe_fault(request_id)
            answer = self.emulator.generate(request, request_id, inputs)
            if request.stream:
                self._stream(request, answer, fault, request_id, edit=edit)
                return
            if fault == "slow":
                self.emulator.observe(request_id, "generated, answered after the client gave up")
                self._hang()
            self.emulator.observe(request_id, "generated")
            self._send(200, answer)
        except ApiError as exc:
            self._send(exc.status, exc.body, exc.headers)
        except _Hung:
            self.close_connection = True

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.emulator.stopping.wait(seconds)  # cut short by stop()
            if self.emulator.stopping.is_set():
                raise _Hung()  # the provider went away mid-render: nothing answered

    def _stream(
        self, request: ImageRequest, answer: dict[str, Any], fault: str | None, request_id: str, *, edit: bool
    ) -> None:
        """The answer as OpenAI streams it: the previews, then the final image with its usage."""
        kind = "image_edit" if edit else "image_generation"
        encoded = answer["data"][0]["b64_json"]
        shown = {name: answer[name] for name in ("background", "output_format", "quality", "size")}
        previews = request.partial_images
        pause = self.emulator.config.latency_ms / 1000 / (previews + 1)
        cut_after = min(1, previews) if CUT_MARKER in request.prompt else None
        try:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("x-request-id", f"req_{random.getrandbits(64):016x}")
            for name, value in (self.emulator.limiter.headers() if self.emulator.limiter.limit else {}).items():
                self.send_header(name, value)
            self.end_headers()
            for index in range(previews + 1):
                if index == cut_after:
                    self.emulator.observe(request_id, "generated, stream cut")
                    raise _Hung()
                self._pause(pause)
                if index == previews:
                    break
                preview = coarse_preview(base64.b64decode(encoded), request, steps=previews - index)
                self._event(
                    f"{kind}.partial_image",
                    {"b64_json": base64.b64encode(preview).decode(), "partial_image_index": index, **shown},
                )
            if fault == "slow":
                self.emulator.observe(request_id, "generated, answered after the client gave up")
                self._hang()
            self._event(f"{kind}.completed", {"b64_json": encoded, **shown, "usage": _with_previews(answer, previews)})
            self.wfile.write(b"0\r\n\r\n")
            self.emulator.observe(request_id, "generated")
        except OSError:
            self.close_connection = True  # the client stopped listening; the render stays billed

    def _event(self, name: str, data: dict[str, Any]) -> None:
        payload = json.dumps({"type": name, "created_at": int(time.time()), **data})
        event = f"event: {name}\ndata: {payload}\n\n".encode()
        self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        self.wfile.flush()

    def _batches(self, body: bytes) -> None:
        """The Files and Batches endpoints, behind the images endpoints' auth and faults; a `slow` fault acts (a batch
        is created) and answers too late."""
        try:
            self._check_auth()
            fault = self._maybe_fault(self.headers.get("x-client-request-id", ""))
            status, answer = self.emulator.batches.handle(
                self.command, self.path, self.headers.get("content-type", ""), body
            )
            if fault == "slow":
                self._hang()
            asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("range", "").strip())
            if isinstance(answer, bytes) and asked and status == 200:
                # A file's content from an offset on, as a reader carrying on asks for it.
                self._send_bytes(206, answer[int(asked.group(1)) :], "application/octet-stream")
            elif isinstance(answer, bytes):
                self._send_bytes(status, answer, "application/octet-stream")
            else:
                self._send(status, answer)
        except ApiError as exc:
            self._send(exc.status, exc.body, exc.headers)
        except (_Hung, OSError):  # hung on purpose, or the client left in the middle of a file
            self.close_connection = True

    def _check_auth(self) -> None:
        auth = self.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise ApiError(401, "You didn't provide an API key.", type_="invalid_request_error", code=None)
        wanted, given = self.emulator.config.api_key, auth[7:].strip()
        if wanted is not None and given != wanted:
            raise ApiError(
                401,
                f"Incorrect API key provided: {given[:3]}***{given[-4:]}.",
                type_="invalid_request_error",
                code="invalid_api_key",
            )

    def _maybe_fault(self, request_id: str) -> str | None:
        """A fault drawn for this call: raised, or returned when it comes after the render (`slow`)."""
        fault = self.emulator.pick_fault()
        if fault is None:
            return None
        with self.emulator.stats.lock:
            self.emulator.stats.faults[fault] += 1
        if fault != "slow":
            self.emulator.observe(request_id, fault)
        if fault == "rate_limit":
            retry_after = self.emulator.config.retry_after_s
            headers = {"retry-after": f"{retry_after:g}"}
            if math.isfinite(retry_after):  # tests send `inf` to see darkroom cope; milliseconds of it do not exist
                headers["retry-after-ms"] = str(int(retry_after * 1000))
            raise ApiError(
                429,
                "Rate limit reached for images per minute. Please try again later.",
                type_="requests",
                code="rate_limit_exceeded",
                headers=headers,
            )
        if fault == "server_error":
            raise ApiError(
                500, "The server had an error while processing your request.", type_="server_error", code=None
            )
        if fault == "hang":
            self._hang()
        return fault

    # WaveSpeed's side: the same auth, latency and faults as the OpenAI side, in WaveSpeed's envelope.

    def _wavespeed_submit(self, model: str, task: str, body: bytes) -> None:
        try:
            if not self.headers.get("authorization", "").lower().startswith("bearer "):
                raise WaveSpeedError(401, "missing API key")
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                raise WaveSpeedError(400, "the body is not valid JSON") from None
            prompt = params.get("prompt") if isinstance(params, dict) else None
            self.emulator.stats.count_request(prompt)
            # Refused before latency, faults or billing; an edit's images are fetched and read here too.
            submission = check_submission(model, task, params)
            sources = fetch_images(submission.images)
            try:
                self.emulator.admit(1)  # one image per submission
            except ApiError as exc:  # the same limit, in WaveSpeed's envelope
                raise WaveSpeedError(429, str(exc.body["error"]["message"]), exc.headers) from None
            self._pause(self.emulator.config.latency_ms / 1000)
            request_id = self.headers.get("x-client-request-id", "")
            fault = self._wavespeed_fault(request_id)
            data = self.emulator.wavespeed.submit(model, submission, self.emulator.url, sources)
            self.emulator.stats.count_submission(str(prompt))
            self.emulator.observe(request_id, "submitted" + (", answered after the client gave up" if fault else ""))
            if fault == "slow":
                self._hang()  # accepted and billed; the answer comes too late to be read
            if submission.sync:
                data = self.emulator.wavespeed.wait(data["id"], self.emulator.url, self.emulator.stopping)
            self._send(200, envelope(data))
        except WaveSpeedError as exc:
            self._send(exc.status, exc.body, exc.headers)
        except _Hung:
            self.close_connection = True

    def _wavespeed_get(self) -> None:
        try:
            output = OUTPUT_PATH.fullmatch(self.path)
            if output:  # the CDN: no auth, no faults
                data, content_type = self.emulator.wavespeed.output(output.group(1), int(output.group(2)))
                self._send_bytes(200, data, content_type)
                return
            if not self.headers.get("authorization", "").lower().startswith("bearer "):
                raise WaveSpeedError(401, "missing API key")
            self._pause(self.emulator.config.latency_ms / 1000)
            if self._wavespeed_fault(self.headers.get("x-client-request-id", "")) == "slow":
                self._hang()  # a slow poll is a hang: polling bills nothing
            result = RESULT_PATH.fullmatch(self.path)
            assert result is not None
            self._send(200, envelope(self.emulator.wavespeed.result(result.group(1), self.emulator.url)))
        except WaveSpeedError as exc:
            self._send(exc.status, exc.body, exc.headers)
        except _Hung:
            self.close_connection = True

    def _wavespeed_fault(self, request_id: str) -> str | None:
        try:
            return self._maybe_fault(request_id)
        except ApiError as exc:  # the same fault, in WaveSpeed's envelope
            raise WaveSpeedError(exc.status, str(exc.body["error"]["message"]), exc.headers) from None

    def _send_bytes(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _hang(self) -> None:
        """Say nothing until the client gives up (or the hang's limit), then drop the connection."""
        deadline = time.monotonic() + self.emulator.config.hang_ms / 1000
        sock = self.connection
        while time.monotonic() < deadline and not self.emulator.stopping.is_set():
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        break
                except OSError:
                    break
        raise _Hung()

    def _json(self, body: bytes) -> dict[str, Any]:
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            raise invalid("We could not parse the JSON body of your request.") from None
        if not isinstance(params, dict):
            raise invalid("The body must be a JSON object.")
        return params

    def _multipart(self, body: bytes) -> tuple[dict[str, Any], dict[str, list[bytes]]]:
        """Form fields as OpenAI reads them (`n` and `output_compression` as integers), and the file parts' bytes by
        name."""
        content_type = self.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise invalid("Edits take multipart/form-data.")
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        params: dict[str, Any] = {}
        files: dict[str, list[bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            payload = payload if isinstance(payload, bytes) else b""
            if name in FILE_PARTS:
                files.setdefault(str(name), []).append(payload)
            elif isinstance(name, str):
                value = payload.decode(errors="replace")
                integer = name in ("n", "output_compression", "partial_images") and FORM_INTEGER.fullmatch(value)
                boolean = name == "stream" and value in ("true", "false")  # a form's text, JSON's boolean
                params[name] = int(value) if integer else (value == "true") if boolean else value
        return params, files

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("x-request-id", f"req_{random.getrandbits(64):016x}")
            limits = self.emulator.limiter.headers() if self.emulator.limiter.limit else {}  # no limit, none announced
            for name, value in {**limits, **(headers or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            # The client stopped listening; whatever was generated for it stays counted.
            self.close_connection = True


class _Hung(Exception):
    pass


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Run the emulator in the foreground until interrupted."""
    emulator = Emulator()
    emulator.start(host, port)
    print(
        f"darkroom emulator: {emulator.url}/v1 (fault rate {emulator.config.fault_rate}, "
        f"latency {emulator.config.latency_ms} ms)",
        flush=True,
    )
    stop = threading.Event()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    emulator.stop()
