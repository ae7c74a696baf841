"""WaveSpeedAI's asynchronous API, as the emulator speaks it: submit, then poll until the prediction ends.

- `POST /api/v3/openai/{model}/text-to-image`: JSON `prompt`, `size` (`WxH` or `W*H`), `quality` (low/medium/high),
  `output_format` (png/jpeg/webp), `enable_sync_mode`, `webhook_url`. Answers `{"code": 200, "message": "success",
  "data": {"id", "status": "created", "urls": {"get"}, ...}}`; each accepted submission is billed, and counted per
  prompt (`submissions` in `GET /_emulator/calls`).
- `GET /api/v3/predictions/{id}/result` (or `/predictions/{id}`): `created`, then `processing`, then `completed` with
  `outputs` (URLs the emulator serves itself, under `/wavespeed-cdn/`), `timings.inference` and `has_nsfw_contents`,
  or `failed` with `error`. A prediction takes `DARKROOM_EMULATOR_ASYNC_MS` (default 3000) from submission to end; its
  images are rendered, and its generation counted, when it completes.
- A prompt containing `[refuse]` makes a failed prediction flagged by content moderation (`has_nsfw_contents`).
- Errors are the same envelope with the HTTP status as `code` and `data: null`. There is no cancel endpoint.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from darkroom import catalog

MODELS = ("gpt-image-2",)
QUALITIES = ("low", "medium", "high")
FORMATS = ("png", "jpeg", "webp")
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
SUBMIT_PATH = re.compile(r"/api/v3/openai/([^/]+)/text-to-image")
RESULT_PATH = re.compile(r"/api/v3/predictions/([0-9a-f]{32})(?:/result)?")
OUTPUT_PATH = re.compile(r"/wavespeed-cdn/([0-9a-f]{32})/(\d+)\.(png|jpg|webp)")
_PARAMETERS = {"prompt", "size", "quality", "output_format", "enable_sync_mode", "webhook_url"}
_SIZE = re.compile(r"([1-9][0-9]{1,4})[x*]([1-9][0-9]{1,4})")
# How long after submission a prediction is still `created` before it is `processing`.
CREATED_FOR_S = 0.2


class WaveSpeedError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": status, "message": message, "data": None}
        self.headers = headers or {}


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


def envelope(data: Any) -> dict[str, Any]:
    return {"code": 200, "message": "success", "data": data}


def check_submission(model: str, params: Any) -> tuple[str, int, int, str, str, bool]:
    """(prompt, width, height, quality, format, sync) of a submission WaveSpeed would take; WaveSpeedError if not."""
    if model not in MODELS:
        raise WaveSpeedError(404, f"model openai/{model} not found")
    if not isinstance(params, dict):
        raise WaveSpeedError(400, "the body must be a JSON object")
    unknown = sorted(set(params) - _PARAMETERS)
    if unknown:
        raise WaveSpeedError(400, f"unknown parameter: {unknown[0]}")
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > 32_000:
        raise WaveSpeedError(400, "prompt is required: a string of 1 to 32000 characters")
    match = _SIZE.fullmatch(str(params.get("size", "1024*1024")))
    if not match:
        raise WaveSpeedError(400, "size must be WIDTH*HEIGHT")
    width, height = int(match.group(1)), int(match.group(2))
    if max(width, height) > catalog.MAX_EDGE or width * height > catalog.MAX_PIXELS:
        raise WaveSpeedError(400, f"size {width}*{height} is larger than the model allows")
    quality = params.get("quality", "medium")
    if quality not in QUALITIES:
        raise WaveSpeedError(400, f"quality must be one of {', '.join(QUALITIES)}")
    fmt = params.get("output_format", "png")
    if fmt not in FORMATS:
        raise WaveSpeedError(400, f"output_format must be one of {', '.join(FORMATS)}")
    sync = params.get("enable_sync_mode", False)
    if not isinstance(sync, bool):
        raise WaveSpeedError(400, "enable_sync_mode must be a boolean")
    return prompt, width, height, quality, fmt, sync


class WaveSpeedService:
    """The predictions one emulator holds. `render` makes an image's bytes; `count_generation` bills it."""

    def __init__(self, render: Any, count_generation: Any, processing_s: float) -> None:
        self._render = render
        self._count_generation = count_generation
        self.processing_s = processing_s
        self._predictions: dict[str, Prediction] = {}
        self._lock = threading.Lock()

    def submit(self, model: str, params: Any, base_url: str) -> dict[str, Any]:
        """A prediction, accepted (and billed). The caller has already validated it and counted the submission."""
        prompt, width, height, quality, fmt, _ = check_submission(model, params)
        prediction = Prediction(uuid.uuid4().hex, model, prompt, width, height, quality, fmt, time.monotonic())
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
        self._count_generation(prediction.prompt)

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
