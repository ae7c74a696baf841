"""A stand-in for OpenAI's Images API: real images from Pillow, OpenAI's usage and error shapes, and faults on demand.

Endpoints: POST /v1/images/generations (JSON), POST /v1/images/edits (multipart, as the openai SDK sends it).
Test hooks: GET /_emulator/stats (calls, faults, successful generations per darkroom job), POST /_emulator/reset.

Knobs (environment, read when the emulator starts, shared with the local stack):
- DARKROOM_EMULATOR_LATENCY_MS: added to every call;
- DARKROOM_EMULATOR_FAULT_RATE: 0 to 1, the fraction of calls answered by a fault, an even mix of 429 with
  retry-after, 500, and a hang that outlasts the worker's provider timeout (it generates nothing);
- DARKROOM_EMULATOR_HANG_MS: how long a hang lasts at most (it ends early when the client gives up);
- DARKROOM_EMULATOR_RETRY_AFTER_S: the retry-after sent with 429s.
A prompt containing `[refuse]` is refused as OpenAI refuses content-policy violations.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from typing import Any

from PIL import Image, ImageDraw

from darkroom_local.http_server import BackgroundHTTPServer

STANDARD_SIZE = (1024, 1024)
# Output image tokens for a 1024x1024 image by quality; other sizes scale with their area.
TOKENS_PER_MEGAPIXEL = {"low": 196, "medium": 1756, "high": 7034, "auto": 1756, "xhigh": 9000, "max": 12000}
REFUSE_MARKER = "[refuse]"
FAULT_KINDS = ("rate_limit", "server_error", "hang")


@dataclass
class EmulatorConfig:
    latency_ms: int = 0
    fault_rate: float = 0.0
    hang_ms: int = 600_000
    retry_after_s: float = 1.0
    seed: int | None = None
    # Which faults the fault rate draws from (tests narrow it to one kind).
    fault_kinds: tuple[str, ...] = FAULT_KINDS

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> EmulatorConfig:
        env = dict(os.environ) if env is None else env
        return cls(
            latency_ms=int(env.get("DARKROOM_EMULATOR_LATENCY_MS", "0")),
            fault_rate=float(env.get("DARKROOM_EMULATOR_FAULT_RATE", "0")),
            hang_ms=int(env.get("DARKROOM_EMULATOR_HANG_MS", "600000")),
            retry_after_s=float(env.get("DARKROOM_EMULATOR_RETRY_AFTER_S", "1")),
        )


@dataclass
class EmulatorStats:
    calls: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    refusals: int = 0
    # Successful generations per darkroom job (from X-Client-Request-Id "job:attempt"), or per call without one.
    generations: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "calls": self.calls,
                "faults": dict(self.faults),
                "refusals": self.refusals,
                "generations": dict(self.generations),
            }


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


def invalid(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, type_="invalid_request_error", code="invalid_value", param=param)


def render_image(
    width: int,
    height: int,
    fmt: str,
    *,
    background: str,
    compression: int | None,
    seed: str,
    source: Image.Image | None = None,
) -> bytes:
    """A real image of the requested size and format: a gradient (or the edited source), a mark, and the seed."""
    rng = random.Random(seed)
    transparent = background == "transparent"
    mode = "RGBA" if transparent else "RGB"
    if source is not None:
        image = source.convert(mode).resize((width, height))
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


def parse_size(size: str | None, default: tuple[int, int] = STANDARD_SIZE) -> tuple[int, int]:
    if not size or size == "auto":
        return default
    try:
        width, height = (int(part) for part in size.lower().split("x"))
    except ValueError:
        raise invalid(f"Invalid size '{size}'.", "size") from None
    if not (16 <= width <= 3840 and 16 <= height <= 3840):
        raise invalid(f"Invalid size '{size}'.", "size")
    return width, height


class Emulator(BackgroundHTTPServer):
    thread_name = "emulator"

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        super().__init__()
        self.handler = _RequestHandler
        self.config = config or EmulatorConfig.from_env()
        self.stats = EmulatorStats()
        self._random = random.Random(self.config.seed)
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        super().stop()

    def pick_fault(self) -> str | None:
        with self.stats.lock:
            if self._random.random() >= self.config.fault_rate:
                return None
            return self._random.choice(self.config.fault_kinds)

    def generate(
        self, params: dict[str, Any], request_id: str, sources: list[Image.Image] | None = None
    ) -> dict[str, Any]:
        prompt = params.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise invalid("Missing required parameter: 'prompt'.", "prompt")
        if REFUSE_MARKER in prompt:
            with self.stats.lock:
                self.stats.refusals += 1
            raise ApiError(
                400,
                "Your request was rejected by the safety system. Your prompt may contain text that is not allowed.",
                type_="image_generation_user_error",
                code="moderation_blocked",
            )
        n = int(params.get("n") or 1)
        if not 1 <= n <= 10:
            raise invalid("n must be between 1 and 10.", "n")
        fmt = params.get("output_format") or "png"
        if fmt not in ("png", "jpeg", "webp"):
            raise invalid(f"Invalid output_format '{fmt}'.", "output_format")
        source = sources[0] if sources else None
        width, height = parse_size(params.get("size"), source.size if source else STANDARD_SIZE)
        quality = params.get("quality") or "auto"
        background = params.get("background") or "auto"
        compression = params.get("output_compression")
        images = [
            render_image(
                width,
                height,
                fmt,
                background=background,
                compression=int(compression) if compression is not None else None,
                seed=f"{prompt}:{i}",
                source=source,
            )
            for i in range(n)
        ]
        text_tokens = max(1, len(prompt) // 4)
        image_in = sum(output_tokens(*s.size, "low") for s in sources or [])
        out_tokens = output_tokens(width, height, quality) * n
        with self.stats.lock:
            self.stats.generations[request_id.split(":")[0] or f"call-{self.stats.calls}"] += 1
        return {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(image).decode()} for image in images],
            "background": "transparent" if background == "transparent" else "opaque",
            "output_format": fmt,
            "quality": quality if quality != "auto" else "medium",
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
        if self.path == "/_emulator/stats":
            self._send(200, self.emulator.stats.as_dict())
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
        if self.path == "/_emulator/reset":
            self.emulator.stats = EmulatorStats()
            self._send(200, {"reset": True})
            return
        try:
            self._check_auth()
            if self.path == "/v1/images/generations":
                params, sources = self._json(body), None
            elif self.path == "/v1/images/edits":
                params, sources = self._multipart(body)
            else:
                raise ApiError(404, f"Unknown path {self.path}", type_="invalid_request_error", code="not_found")
            with self.emulator.stats.lock:
                self.emulator.stats.calls += 1
            if self.emulator.config.latency_ms:
                self.emulator.stopping.wait(self.emulator.config.latency_ms / 1000)  # cut short by stop()
            self._maybe_fault()
            request_id = self.headers.get("x-client-request-id", "")
            self._send(200, self.emulator.generate(params, request_id, sources))
        except ApiError as exc:
            self._send(exc.status, exc.body, exc.headers)
        except _Hung:
            self.close_connection = True

    def _check_auth(self) -> None:
        auth = self.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise ApiError(401, "You didn't provide an API key.", type_="invalid_request_error", code=None)

    def _maybe_fault(self) -> None:
        fault = self.emulator.pick_fault()
        if fault is None:
            return
        with self.emulator.stats.lock:
            self.emulator.stats.faults[fault] += 1
        if fault == "rate_limit":
            retry_after = self.emulator.config.retry_after_s
            raise ApiError(
                429,
                "Rate limit reached for images per minute. Please try again later.",
                type_="requests",
                code="rate_limit_exceeded",
                headers={"retry-after": f"{retry_after:g}", "retry-after-ms": str(int(retry_after * 1000))},
            )
        if fault == "server_error":
            raise ApiError(
                500, "The server had an error while processing your request.", type_="server_error", code=None
            )
        self._hang()

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

    def _multipart(self, body: bytes) -> tuple[dict[str, Any], list[Image.Image]]:
        content_type = self.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise invalid("Edits take multipart/form-data.")
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        params: dict[str, Any] = {}
        sources: list[Image.Image] = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            payload = payload if isinstance(payload, bytes) else b""
            if name in ("image", "image[]"):
                try:
                    sources.append(Image.open(io.BytesIO(payload)))
                except OSError:
                    raise invalid("Could not read the uploaded image.", "image") from None
            elif name == "mask":
                continue
            elif isinstance(name, str):
                value = payload.decode()
                params[name] = int(value) if name in ("n", "output_compression") and value.isdigit() else value
        if not sources:
            raise invalid("Missing required parameter: 'image'.", "image")
        return params, sources

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", f"req_{random.getrandbits(64):016x}")
        self.send_header("x-ratelimit-limit-requests", "250")
        self.send_header("x-ratelimit-remaining-requests", "249")
        self.send_header("x-ratelimit-reset-requests", "240ms")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


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
