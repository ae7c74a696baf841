"""WaveSpeedAI's asynchronous API, as the emulator speaks it: submit, then poll until the prediction ends.

- `POST /api/v3/openai/{model}/text-to-image`: JSON `prompt`, `size` (`WxH` or `W*H`), `quality` (low/medium/high),
  `output_format` (png/jpeg/webp), `enable_sync_mode`, `webhook_url`. Answers `{"code": 200, "message": "success",
  "data": {"id", "status": "created", "urls": {"get"}, ...}}`; each accepted submission is billed, and counted per
  prompt (`submissions` in `GET /_emulator/calls`).
- `POST /api/v3/openai/{model}/edit`: the same, with `images`, a list of 1 to 16 http(s) URLs, and `size` also
  `auto` (the default: the first image's size). Each URL is fetched and read when the edit is submitted (10 s, under
  50 MB, png/webp/jpeg by its bytes): one that cannot be is a 400 naming it, refused before latency, faults or
  billing. The completed prediction is the first image tinted all over (WaveSpeed takes no mask; see the emulator's
  docstring), and the prompt's `edits` report gains its entry.
- `GET /api/v3/predictions/{id}/result` (or `/predictions/{id}`): `created`, then `processing`, then `completed` with
  `outputs` (URLs the emulator serves itself, under `/wavespeed-cdn/`), `timings.inference` and `has_nsfw_contents`,
  or `failed` with `error`. A prediction takes `DARKROOM_EMULATOR_ASYNC_MS` (default 3000) from submission to end; its
  images are rendered, and its generation counted, when it completes.
- A prompt containing `[refuse]` makes a failed prediction flagged by content moderation (`has_nsfw_contents`).
- Errors are the same envelope with the HTTP status as `code` and `data: null`. There is no cancel endpoint.
"""

from __future__ import annotations

import io
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from darkroom import catalog

MODELS = ("gpt-image-2",)
QUALITIES = ("low", "medium", "high")
FORMATS = ("png", "jpeg", "webp")
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
TASKS = ("text-to-image", "edit")
SUBMIT_PATH = re.compile(r"/api/v3/openai/([^/]+)/(text-to-image|edit)")
RESULT_PATH = re.compile(r"/api/v3/predictions/([0-9a-f]{32})(?:/result)?")
OUTPUT_PATH = re.compile(r"/wavespeed-cdn/([0-9a-f]{32})/(\d+)\.(png|jpg|webp)")
_PARAMETERS = {"prompt", "size", "quality", "output_format", "enable_sync_mode", "webhook_url"}
_EDIT_PARAMETERS = _PARAMETERS | {"images"}
_SIZE = re.compile(r"([1-9][0-9]{1,4})[x*]([1-9][0-9]{1,4})")
# How long after submission a prediction is still `created` before it is `processing`.
CREATED_FOR_S = 0.2
FETCH_TIMEOUT_S = 10.0
# Pillow's names for catalog.INPUT_FORMATS: only these plugins may open an input, whatever its name or content type.
PILLOW_FORMATS = ("PNG", "WEBP", "JPEG")


class WaveSpeedError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": status, "message": message, "data": None}
        self.headers = headers or {}


@dataclass(frozen=True)
class Submission:
    """A submission WaveSpeed would take."""

    prompt: str
    size: tuple[int, int] | None  # None: `auto`, an edit's first image's size
    quality: str
    output_format: str
    sync: bool
    images: tuple[str, ...] = ()  # an edit's input URLs


@dataclass
class Prediction:
    id: str
    model: str
    prompt: str
    width: int
    height: int
    quality: str
    output_format: str
    submitted_at: float
    status: str = "created"
    error: str = ""
    nsfw: bool = False
    outputs: list[bytes] = field(default_factory=list)
    # An edit's input images, as fetched at submission; empty for text-to-image.
    sources: list[Image.Image] = field(default_factory=list)


def envelope(data: Any) -> dict[str, Any]:
    return {"code": 200, "message": "success", "data": data}


def check_submission(model: str, task: str, params: Any) -> Submission:
    """The submission, if WaveSpeed would take it (an edit's images not yet fetched); WaveSpeedError if not."""
    if model not in MODELS or task not in TASKS:
        raise WaveSpeedError(404, f"model openai/{model} not found")
    if not isinstance(params, dict):
        raise WaveSpeedError(400, "the body must be a JSON object")
    edit = task == "edit"
    unknown = sorted(set(params) - (_EDIT_PARAMETERS if edit else _PARAMETERS))
    if unknown:
        raise WaveSpeedError(400, f"unknown parameter: {unknown[0]}")
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > 32_000:
        raise WaveSpeedError(400, "prompt is required: a string of 1 to 32000 characters")
    images = params.get("images") if edit else []
    if not (
        isinstance(images, list)
        and (1 if edit else 0) <= len(images) <= catalog.MAX_EDIT_IMAGES
        and all(isinstance(url, str) for url in images)
    ):
        raise WaveSpeedError(400, f"images is required: a list of 1 to {catalog.MAX_EDIT_IMAGES} image URLs")
    size = _check_size(params.get("size", "auto" if edit else "1024*1024"), edit=edit)
    quality = params.get("quality", "medium")
    if quality not in QUALITIES:
        raise WaveSpeedError(400, f"quality must be one of {', '.join(QUALITIES)}")
    fmt = params.get("output_format", "png")
    if fmt not in FORMATS:
        raise WaveSpeedError(400, f"output_format must be one of {', '.join(FORMATS)}")
    sync = params.get("enable_sync_mode", False)
    if not isinstance(sync, bool):
        raise WaveSpeedError(400, "enable_sync_mode must be a boolean")
    return Submission(prompt, size, quality, fmt, sync, tuple(images))


def _check_size(size: object, *, edit: bool) -> tuple[int, int] | None:
    if edit and size == "auto":
        return None
    match = _SIZE.fullmatch(str(size))
    if not match:
        raise WaveSpeedError(400, "size must be WIDTH*HEIGHT" + (" or auto" if edit else ""))
    width, height = int(match.group(1)), int(match.group(2))
    if max(width, height) > catalog.MAX_EDGE or width * height > catalog.MAX_PIXELS:
        raise WaveSpeedError(400, f"size {width}*{height} is larger than the model allows")
    return width, height


def open_input_image(data: bytes, formats: Sequence[str] = PILLOW_FORMATS) -> Image.Image:
    """The image the bytes hold, read by one of `formats`' plugins only (never by a name or content type); ValueError
    if they are none of them or do not decode. Shared with the OpenAI side's uploads."""
    try:
        image = Image.open(io.BytesIO(data), formats=list(formats))
        image.load()  # a truncated file fails here, as a refusal, rather than halfway through a render
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable {'/'.join(formats).lower()} image") from exc
    return image


def fetch_images(urls: Sequence[str]) -> list[Image.Image]:
    """An edit's images, fetched and read at submission as WaveSpeed does; WaveSpeedError (400) naming the first one
    that cannot be."""
    if not urls:
        return []
    with httpx.Client(timeout=FETCH_TIMEOUT_S) as client:
        return [_fetch_image(client, f"images[{index}]", url) for index, url in enumerate(urls)]


def _fetch_image(client: httpx.Client, name: str, url: str) -> Image.Image:
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # an unbalanced IPv6 bracket, say
        valid = False
    if not valid:
        raise WaveSpeedError(400, f"{name} must be an http or https URL")
    # Presigned URLs carry their signature in the query: errors name the object, not the credential.
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
    deadline = time.monotonic() + FETCH_TIMEOUT_S
    data = bytearray()
    try:
        with client.stream("GET", url) as response:
            if not response.is_success:
                raise WaveSpeedError(400, f"{name}: fetching {shown} answered HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) >= catalog.MAX_INPUT_IMAGE_BYTES:
                    raise WaveSpeedError(
                        400, f"{name}: the image at {shown} is not under {catalog.MAX_INPUT_IMAGE_BYTES} bytes"
                    )
                if time.monotonic() > deadline:  # httpx's timeout is per read: a trickle would outlast it
                    raise WaveSpeedError(400, f"{name}: fetching {shown} took over {FETCH_TIMEOUT_S:g} s")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise WaveSpeedError(400, f"{name}: could not fetch {shown} ({exc.__class__.__name__})") from None
    try:
        return open_input_image(bytes(data))
    except ValueError:
        raise WaveSpeedError(400, f"{name}: the file at {shown} is not a png, webp or jpeg image") from None


class WaveSpeedService:
    """The predictions one emulator holds. `render` makes an image's bytes; `count_generation` bills it."""

    def __init__(
        self,
        render: Callable[[Prediction], bytes],
        count_generation: Callable[[Prediction], None],
        processing_s: float,
    ) -> None:
        self._render = render
        self._count_generation = count_generation
        self.processing_s = processing_s
        self._predictions: dict[str, Prediction] = {}
        self._lock = threading.Lock()

    def submit(
        self, model: str, submission: Submission, base_url: str, sources: Sequence[Image.Image] = ()
    ) -> dict[str, Any]:
        """A prediction, accepted (and billed). The caller has already validated it, fetched an edit's `sources` and
        counts the submission."""
        width, height = submission.size or sources[0].size
        prediction = Prediction(
            uuid.uuid4().hex,
            model,
            submission.prompt,
            width,
            height,
            submission.quality,
            submission.output_format,
            time.monotonic(),
            sources=list(sources),
        )
        with self._lock:
            self._predictions[prediction.id] = prediction
        return self.describe(prediction, base_url)

    def result(self, prediction_id: str, base_url: str) -> dict[str, Any]:
        with self._lock:
            prediction = self._predictions.get(prediction_id)
        if prediction is None:
            raise WaveSpeedError(404, f"prediction {prediction_id} not found")
        self._advance(prediction)
        return self.describe(prediction, base_url)

    def wait(self, prediction_id: str, base_url: str, stopping: threading.Event) -> dict[str, Any]:
        """Sync mode: the prediction once it has ended."""
        stopping.wait(self.processing_s)
        return self.result(prediction_id, base_url)

    def output(self, prediction_id: str, index: int) -> tuple[bytes, str]:
        with self._lock:
            prediction = self._predictions.get(prediction_id)
        if prediction is None or prediction.status != "completed" or index >= len(prediction.outputs):
            raise WaveSpeedError(404, "no such output")
        return prediction.outputs[index], CONTENT_TYPES[prediction.output_format]

    def _advance(self, prediction: Prediction) -> None:
        """Move a prediction on by the time since it was submitted; it is rendered (and billed) once, on ending."""
        with self._lock:
            if prediction.status in ("completed", "failed"):
                return
            elapsed = time.monotonic() - prediction.submitted_at
            if elapsed < min(CREATED_FOR_S, self.processing_s):
                return
            if elapsed < self.processing_s:
                prediction.status = "processing"
                return
            if "[refuse]" in prediction.prompt:
                prediction.status, prediction.nsfw = "failed", True
                prediction.error = "The prompt was flagged by the content moderation system."
                return
            prediction.outputs = [self._render(prediction)]
            prediction.status = "completed"
        self._count_generation(prediction)

    def describe(self, prediction: Prediction, base_url: str) -> dict[str, Any]:
        ext = EXTENSIONS[prediction.output_format]
        data: dict[str, Any] = {
            "id": prediction.id,
            "model": f"openai/{prediction.model}",
            "status": prediction.status,
            "urls": {"get": f"{base_url}/api/v3/predictions/{prediction.id}/result"},
            "outputs": [f"{base_url}/wavespeed-cdn/{prediction.id}/{i}.{ext}" for i in range(len(prediction.outputs))],
            "has_nsfw_contents": [prediction.nsfw] if prediction.status in ("completed", "failed") else [],
            "error": prediction.error,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if prediction.status == "completed":
            data["timings"] = {"inference": round(self.processing_s * 1000)}
        return data
