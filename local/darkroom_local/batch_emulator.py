"""OpenAI's Files and Batch APIs for image requests, as the emulator serves them and the openai SDK parses them.

Endpoints, behind the images endpoints' auth and fault draws (darkroom_local.emulator dispatches here):
- `POST /v1/files` (multipart `purpose`, `file`, optional `expires_after[anchor]`/`expires_after[seconds]`): a
  FileObject, `status` `processed`. A `batch` file must be named `*.jsonl` and be at most 200 MB, any other at most
  512 MB. `GET /v1/files/{id}`: the FileObject; `GET /v1/files/{id}/content`: its bytes (an input file, an image, or
  a batch's output or error file, purpose `batch_output`).
- `POST /v1/batches`: `input_file_id` (a `batch` file), `endpoint` (`/v1/images/generations` or `/v1/images/edits`,
  the only ones emulated), `completion_window` (`24h`), `metadata` (16 pairs at most, keys up to 64 characters,
  values up to 512), `output_expires_after`. Refused at once as OpenAI refuses them: an unknown file 404, a file of
  another purpose, another endpoint or window, bad metadata or an unknown parameter 400.
- `GET /v1/batches/{id}`; `POST /v1/batches/{id}/cancel` (an ended batch: 409); `GET /v1/batches?limit=&after=`,
  newest first, as `{"object": "list", "data", "first_id", "last_id", "has_more"}`.

A batch lives for DARKROOM_EMULATOR_BATCH_MS (`batch_ms`, default 2000) from its creation, and moves on whenever it is
read, listed or cancelled: there is no timer, so a test that sets `BatchStore.clock` sees every step it wants.
- `validating` for the first tenth. Then `failed` if the input file breaks a rule, each broken rule in `errors.data`
  with its 1-based `line`: `invalid_json_line`, `missing_required_parameter`, `invalid_value` (a `custom_id` that is
  no string, a method other than POST, a body that is no object), `url_mismatch`, `duplicate_custom_id`,
  `model_mismatch` (one model per batch), `line_too_large` (MAX_LINE_BYTES, the emulator's own limit: OpenAI
  documents none), or alone `empty_file` or `too_many_tasks` (over 50,000 lines).
- `in_progress` until eight tenths, the lines run one after another at an even pace; `finalizing`; then `completed`,
  with `output_file_id` (the lines answered 2xx) and `error_file_id` (the others), each None when it would be empty.
- Cancelling: `cancelling` for a tenth of `batch_ms`, then `cancelled`. Lines that ran before the cancel stay in the
  output file; the rest go to the error file as `{"response": null, "error": {"code": "batch_cancelled", ...}}`.
- `batch_outcome` (DARKROOM_EMULATOR_BATCH_OUTCOME) for tests: `complete` (default); `expire`, where half the lines
  run and the batch then ends `expired`, the rest in the error file as `batch_expired`; `fail`, where a valid batch
  fails after validating with OpenAI's `token_limit_exceeded` and nothing runs.

Each line is run by the images endpoints' own rules and renderer (`check_request`, `check_edit`,
`Emulator.generate`) and written as `{"id": "batch_req_…", "custom_id", "response": {"status_code", "request_id",
"body"}, "error": null}`; a refused line (`[refuse]` in its prompt, an invalid size) goes to the error file with its
400 and OpenAI's error body, as OpenAI writes it. An edit line's body is JSON: `images`, a list of `{"file_id"}` or
`{"image_url"}` (a `data:` URL, or an http(s) URL fetched when the line runs), an optional `mask` alike, and the
edit's other fields; file ids name files uploaded here (purpose `vision`, say). `markup` is not taken in a batch.
A line is counted once in `GET /_emulator/calls` when it runs, however often its batch is read: a request, and if it
generated, a generation that is also `batched`. Its `custom_id` stands for an images call's X-Client-Request-Id
(generations per darkroom job in `/_emulator/stats`, the local stack's trail). Lines run inside the read that finds
them due, which answers once their renders are done. The batch's `usage` sums its lines' token counts.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx

from darkroom import catalog
from darkroom_local import emulator as images

if TYPE_CHECKING:
    from darkroom_local.emulator import Emulator

GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"
ENDPOINTS = (GENERATIONS, EDITS)
COMPLETION_WINDOW_S = 24 * 3600
OUTCOMES = ("complete", "expire", "fail")
ENDED = ("completed", "failed", "expired", "cancelled")
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_TASKS = 50_000
# Room for one edit image at the images endpoint's 50 MB limit as a base64 data URL, with its fields.
MAX_LINE_BYTES = 72 * 1024 * 1024
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
OUTPUT_EXPIRY_S = (3600, 30 * 24 * 3600)
MAX_PAGE = 100
BATCH_PARAMETERS = frozenset({"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"})
# Fractions of batch_ms: validating ends, in_progress ends (finalizing starts); cancelling lasts CANCELLING.
VALIDATED = 0.1
FINALIZING = 0.8
CANCELLING = 0.1
FETCH_TIMEOUT_S = 10.0
_FILE_PATH = re.compile(r"/v1/files/([^/]+)(/content)?")
_BATCH_PATH = re.compile(r"/v1/batches/([^/]+)(/cancel)?")
_DATA_URL = re.compile(r"data:image/[a-z0-9.+-]+;base64,(.*)", re.DOTALL)


def handles(path: str) -> bool:
    route = urlsplit(path).path
    return route in ("/v1/files", "/v1/batches") or route.startswith(("/v1/files/", "/v1/batches/"))


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    expires_at: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass(frozen=True)
class InputLine:
    number: int
    custom_id: str
    body: dict[str, Any]


@dataclass
class BatchRecord:
    id: str
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    output_expiry_s: int | None
    lines: list[InputLine]
    # The rules the input file breaks: found when the batch is created, reported when its validation ends.
    found: list[dict[str, Any]]
    model: str | None
    # When it was created by the store's clock and by the wall clock, and how long it lives (batch_ms).
    started: float
    created_at: int
    span_s: float
    outcome: str
    status: str = "validating"
    ran: int = 0  # lines run so far, in order
    outputs: list[bytes] = field(default_factory=list)
    failures: list[bytes] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("input", "cached", "output", "total"), 0))
    times: dict[str, int] = field(default_factory=dict)  # "in_progress_at" and the like, wall-clock seconds
    problems: list[dict[str, Any]] = field(default_factory=list)  # errors.data
    cancelled_since: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None

    def at(self, fraction: float) -> float:
        return self.started + fraction * self.span_s

    def wall(self, moment: float) -> int:
        return self.created_at + int(moment - self.started)

    def due(self, moment: float) -> int:
        """How many lines should have run by `moment`: evenly spread over in_progress."""
        start, end = self.at(VALIDATED), self.at(FINALIZING)
        if moment < start:
            return 0
        if moment >= end or end <= start:
            return len(self.lines)
        return min(len(self.lines), math.floor((moment - start) / (end - start) * len(self.lines)))

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": {"object": "list", "data": self.problems} if self.problems else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + COMPLETION_WINDOW_S,
            **{
                name: self.times.get(name)
                for name in (
                    "in_progress_at",
                    "finalizing_at",
                    "completed_at",
                    "failed_at",
                    "expired_at",
                    "cancelling_at",
                    "cancelled_at",
                )
            },
            "request_counts": {
                "total": 0 if self.status == "validating" or self.problems else len(self.lines),
                "completed": self.completed,
                "failed": self.failed,
            },
            "usage": {
                "input_tokens": self.usage["input"],
                "input_tokens_details": {"cached_tokens": self.usage["cached"]},
                "output_tokens": self.usage["output"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.usage["total"],
            },
            "metadata": self.metadata,
        }


class BatchStore:
    """The files and batches one emulator holds; its images rules, renderer and billing run each line."""

    def __init__(self, emulator: Emulator, clock: Callable[[], float] = time.monotonic) -> None:
        self.emulator = emulator
        self.clock = clock
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, BatchRecord] = {}  # oldest first
        self._lock = threading.RLock()

    def handle(self, method: str, path: str, content_type: str, body: bytes) -> tuple[int, dict[str, Any] | bytes]:
        """One request to a path `handles` took: (status, JSON answer or a file's bytes), or images.ApiError."""
        parts = urlsplit(path)
        route, query = parts.path, parse_qs(parts.query)
        file_path, batch_path = _FILE_PATH.fullmatch(route), _BATCH_PATH.fullmatch(route)
        with self._lock:
            if method == "POST" and route == "/v1/files":
                return 200, self.upload(content_type, body).describe()
            if method == "GET" and file_path:
                stored = self._file(file_path.group(1))
                return 200, stored.data if file_path.group(2) else stored.describe()
            if method == "POST" and route == "/v1/batches":
                return 200, self.create(_json_object(body)).describe()
            if method == "GET" and route == "/v1/batches":
                return 200, self.page(query)
            if batch_path and (method == "POST") == bool(batch_path.group(2)):
                batch = self._batch(batch_path.group(1))
                return 200, (self.cancel(batch) if batch_path.group(2) else self._advance(batch)).describe()
        raise images.ApiError(404, f"Unknown path {route}", type_="invalid_request_error", code="not_found")

    # Files.

    def upload(self, content_type: str, body: bytes) -> StoredFile:
        fields, uploaded = _multipart(content_type, body)
        purpose = fields.get("purpose")
        if purpose is None:
            raise images.invalid("Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
        if purpose not in PURPOSES:
            raise images.invalid(
                f"Invalid value: '{purpose}'. Supported values are: {images._listed(PURPOSES)}.", "purpose"
            )
        if uploaded is None:
            raise images.invalid("Missing required parameter: 'file'.", "file", "missing_required_parameter")
        filename, data = uploaded
        if purpose == "batch" and not filename.endswith(".jsonl"):
            raise images.invalid("Invalid file format for Batch API. Must be .jsonl", "file")
        limit = MAX_BATCH_FILE_BYTES if purpose == "batch" else MAX_FILE_BYTES
        if len(data) > limit:
            raise images.invalid(f"File is too large: at most {limit // (1024 * 1024)} MB for purpose '{purpose}'.")
        created = int(time.time())
        stored = StoredFile(_new_id("file-"), filename, purpose, data, created, _file_expiry(fields, created))
        self.files[stored.id] = stored
        return stored

    def _file(self, file_id: str) -> StoredFile:
        stored = self.files.get(file_id)
        if stored is None:
            raise images.ApiError(
                404, f"No such File object: {file_id}", type_="invalid_request_error", code=None, param="id"
            )
        return stored

    # Batches.

    def create(self, params: dict[str, Any]) -> BatchRecord:
        for name in params:
            if name not in BATCH_PARAMETERS:
                raise images.invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if params.get(name) is None:
                raise images.invalid(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
        endpoint = params["endpoint"]
        if endpoint not in ENDPOINTS:
            raise images.invalid(
                f"Invalid value: '{endpoint}'. Supported values are: {images._listed(ENDPOINTS)}.", "endpoint"
            )
        if params["completion_window"] != "24h":
            raise images.invalid(
                f"Invalid value: '{params['completion_window']}'. Supported values are: '24h'.", "completion_window"
            )
        metadata = _metadata(params.get("metadata"))
        expiry = _output_expiry(params.get("output_expires_after"))
        input_file = self._file(str(params["input_file_id"]))
        if input_file.purpose != "batch":
            raise images.invalid(
                f"The input file {input_file.id} has purpose '{input_file.purpose}'; a batch takes a file uploaded "
                "with purpose 'batch'.",
                "input_file_id",
            )
        lines, problems, model = read_input(input_file.data, endpoint)
        config = self.emulator.config
        batch = BatchRecord(
            id=_new_id("batch_"),
            endpoint=endpoint,
            input_file_id=input_file.id,
            metadata=metadata,
            output_expiry_s=expiry,
            lines=lines,
            found=problems,
            model=model,
            started=self.clock(),
            created_at=int(time.time()),
            span_s=max(0, config.batch_ms) / 1000,
            outcome=config.batch_outcome if config.batch_outcome in OUTCOMES else "complete",
        )
        self.batches[batch.id] = batch
        return batch

    def page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        limit_text = query.get("limit", ["20"])[-1]
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            raise images.invalid(f"Invalid 'limit': expected an integer from 1 to {MAX_PAGE}.", "limit")
        newest_first = list(reversed(self.batches.values()))
        after = query.get("after", [None])[-1]
        if after is not None:
            ids = [batch.id for batch in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        page = newest_first[: int(limit_text)]
        data = [self._advance(batch).describe() for batch in page]
        return {
            "object": "list",
            "data": data,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(newest_first) > len(page),
        }

    def cancel(self, batch: BatchRecord) -> BatchRecord:
        self._advance(batch)
        if batch.status in ENDED:
            raise images.ApiError(
                409,
                f"Cannot cancel a batch with status '{batch.status}'.",
                type_="invalid_request_error",
                code=None,
            )
        if batch.status != "cancelling":
            now = self.clock()
            batch.status, batch.cancelled_since = "cancelling", now
            batch.times["cancelling_at"] = batch.wall(now)
        return self._advance(batch)

    def _batch(self, batch_id: str) -> BatchRecord:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise images.ApiError(
                404, f"No batch found with id '{batch_id}'.", type_="invalid_request_error", code=None, param="id"
            )
        return batch

    def _advance(self, batch: BatchRecord) -> BatchRecord:
        """Move the batch on to where its clock says it is: every line due runs now, once."""
        now = self.clock()
        if batch.status in ENDED:
            return batch
        if batch.status == "cancelling":
            assert batch.cancelled_since is not None
            if now >= batch.cancelled_since + CANCELLING * batch.span_s:
                self._end(batch, "cancelled", now, "batch_cancelled", "This request was cancelled with its batch.")
            return batch
        if now < batch.at(VALIDATED):
            return batch
        if batch.status == "validating":
            problems = batch.found
            if not problems and batch.outcome == "fail":
                problems = [_token_limit(batch.model)]
            if problems:
                batch.problems, batch.status = problems, "failed"
                batch.times["failed_at"] = batch.wall(batch.at(VALIDATED))
                return batch
            batch.status = "in_progress"
            batch.times["in_progress_at"] = batch.wall(batch.at(VALIDATED))
        runnable = len(batch.lines) // 2 if batch.outcome == "expire" else len(batch.lines)
        while batch.ran < min(runnable, batch.due(now)):
            self._run(batch, batch.lines[batch.ran])
            batch.ran += 1
        if batch.outcome == "expire":
            if now >= batch.at(1):
                message = "This request could not be executed before the completion window expired."
                self._end(batch, "expired", batch.at(1), "batch_expired", message)
            return batch
        if now >= batch.at(FINALIZING) and batch.status == "in_progress":
            batch.status = "finalizing"
            batch.times["finalizing_at"] = batch.wall(batch.at(FINALIZING))
        if now >= batch.at(1):
            self._end(batch, "completed", batch.at(1))
        return batch

    def _end(self, batch: BatchRecord, status: str, moment: float, code: str = "", message: str = "") -> None:
        """The batch's last step: the lines that never ran fail with `code`, and its files are written."""
        for line in batch.lines[batch.ran :]:
            batch.failures.append(_result_line(line.custom_id, None, error={"code": code, "message": message}))
            batch.failed += 1
        batch.ran = len(batch.lines)
        batch.output_file_id = self._output_file(batch, "output", batch.outputs)
        batch.error_file_id = self._output_file(batch, "error", batch.failures)
        batch.outputs, batch.failures = [], []
        batch.status = status
        batch.times[f"{status}_at"] = batch.wall(moment)

    def _output_file(self, batch: BatchRecord, kind: str, lines: list[bytes]) -> str | None:
        if not lines:
            return None
        created = int(time.time())
        expires = created + batch.output_expiry_s if batch.output_expiry_s else None
        data = b"".join(line + b"\n" for line in lines)
        stored = StoredFile(_new_id("file-"), f"{batch.id}_{kind}.jsonl", "batch_output", data, created, expires)
        self.files[stored.id] = stored
        return stored.id

    # Lines.

    def _run(self, batch: BatchRecord, line: InputLine) -> None:
        """One line through the images rules and renderer, billed as a generation made through a batch."""
        stats = self.emulator.stats
        stats.count_request(line.body.get("prompt"))
        try:
            answer = self._answer(batch.endpoint, line)
        except images.ApiError as exc:
            batch.failures.append(_result_line(line.custom_id, exc.status, body=exc.body))
            batch.failed += 1
            self.emulator.observe(line.custom_id, f"refused in {batch.id} ({exc.status})")
            return
        stats.count_batched(str(line.body["prompt"]))
        self.emulator.observe(line.custom_id, f"generated in {batch.id}")
        usage = answer["usage"]
        batch.usage["input"] += usage["input_tokens"]
        batch.usage["output"] += usage["output_tokens"]
        batch.usage["total"] += usage["total_tokens"]
        batch.outputs.append(_result_line(line.custom_id, 200, body=answer))
        batch.completed += 1

    def _answer(self, endpoint: str, line: InputLine) -> dict[str, Any]:
        if endpoint == GENERATIONS:
            return self.emulator.generate(images.check_request(line.body, edit=False), line.custom_id)
        references = {name: line.body[name] for name in ("images", "mask") if name in line.body}
        params = {name: value for name, value in line.body.items() if name not in references}
        request = images.check_request(params, edit=True)
        listed = references.get("images")
        if not isinstance(listed, list) or not listed:
            raise images.invalid("Missing required parameter: 'images'.", "images", "missing_required_parameter")
        files = {"image[]": [self._reference(ref, f"images[{index}]") for index, ref in enumerate(listed)]}
        if references.get("mask") is not None:
            files["mask"] = [self._reference(references["mask"], "mask")]
        return self.emulator.generate(request, line.custom_id, images.check_edit(request, files))

    def _reference(self, reference: Any, param: str) -> bytes:
        """The bytes an edit line's `{"file_id"}` or `{"image_url"}` points at."""
        if not isinstance(reference, dict) or len(reference) != 1 or not {"file_id", "image_url"} & set(reference):
            raise images.invalid(f"Invalid '{param}': expected an object with either 'file_id' or 'image_url'.", param)
        if "file_id" in reference:
            stored = self.files.get(str(reference["file_id"]))
            if stored is None:
                raise images.invalid(
                    f"Invalid '{param}.file_id': no such File object: {reference['file_id']}.", f"{param}.file_id"
                )
            return stored.data
        return _fetch(reference["image_url"], f"{param}.image_url")


def read_input(data: bytes, endpoint: str) -> tuple[list[InputLine], list[dict[str, Any]], str | None]:
    """A batch input file's lines, every rule they break (as OpenAI's `errors.data`), and their one model."""
    if not data.strip():
        return [], [_problem("empty_file", "The batch input file is empty.")], None
    raw_lines = data.split(b"\n")
    if raw_lines[-1].strip() == b"":
        raw_lines.pop()  # the newline that ends the last line
    if len(raw_lines) > MAX_TASKS:
        message = f"The batch input file has {len(raw_lines)} requests; a batch takes at most {MAX_TASKS}."
        return [], [_problem("too_many_tasks", message)], None
    lines: list[InputLine] = []
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(raw_lines, 1):
        line, problem = _input_line(number, raw, endpoint)
        if problem is None and line is not None:
            line_model = line.body.get("model", catalog.DEFAULT_MODEL)
            if line.custom_id in seen:
                problem = _problem(
                    "duplicate_custom_id",
                    "The custom_id for this request is a duplicate of another request. The custom_id parameter must "
                    "be unique for each request in a batch.",
                    number,
                    "custom_id",
                )
            elif model is not None and line_model != model:
                problem = _problem(
                    "model_mismatch",
                    f"The model '{line_model}' differs from the model of the batch's other requests ('{model}'): "
                    "a batch takes one model.",
                    number,
                    "body.model",
                )
            else:
                seen.add(line.custom_id)
                model = model if model is not None else str(line_model)
                lines.append(line)
        if problem is not None:
            problems.append(problem)
    return lines, problems, model


def _input_line(number: int, raw: bytes, endpoint: str) -> tuple[InputLine | None, dict[str, Any] | None]:
    if len(raw) > MAX_LINE_BYTES:
        message = f"This line is {len(raw)} bytes; a request line is at most {MAX_LINE_BYTES} bytes."
        return None, _problem("line_too_large", message, number)
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        return None, _problem("invalid_json_line", "This line is not parseable as valid JSON.", number)
    for name in ("custom_id", "method", "url", "body"):
        if name not in parsed:
            return None, _problem("missing_required_parameter", f"Missing required parameter: '{name}'.", number, name)
    if not isinstance(parsed["custom_id"], str) or not parsed["custom_id"]:
        return None, _problem("invalid_value", "custom_id must be a non-empty string.", number, "custom_id")
    if parsed["method"] != "POST":
        return None, _problem("invalid_value", "The method of a batch request must be POST.", number, "method")
    if parsed["url"] != endpoint:
        message = f"The URL provided for this request does not match the batch endpoint {endpoint}."
        return None, _problem("url_mismatch", message, number, "url")
    if not isinstance(parsed["body"], dict):
        return None, _problem("invalid_value", "The body of a batch request must be a JSON object.", number, "body")
    return InputLine(number, parsed["custom_id"], parsed["body"]), None


def _problem(code: str, message: str, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _token_limit(model: str | None) -> dict[str, Any]:
    return _problem(
        "token_limit_exceeded",
        f"Enqueued token limit reached for {model} in organization org-emulator. Try again once some in_progress "
        "batches have been completed.",
    )


def _result_line(
    custom_id: str, status: int | None, *, body: dict[str, Any] | None = None, error: dict[str, str] | None = None
) -> bytes:
    response = None if status is None else {"status_code": status, "request_id": _new_id("req_"), "body": body}
    line = {"id": _new_id("batch_req_"), "custom_id": custom_id, "response": response, "error": error}
    return json.dumps(line, separators=(",", ":")).encode()


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        params = json.loads(body or b"{}")
    except ValueError:
        raise images.invalid("We could not parse the JSON body of your request.") from None
    if not isinstance(params, dict):
        raise images.invalid("The body must be a JSON object.")
    return params


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """An upload's text fields, and its `file` part as (filename, bytes)."""
    if not content_type.startswith("multipart/form-data"):
        raise images.invalid("Uploads take multipart/form-data.")
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, str] = {}
    uploaded: tuple[str, bytes] | None = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""
        if name == "file":
            uploaded = (str(part.get_filename() or "upload"), payload)
        elif isinstance(name, str):
            fields[name] = payload.decode(errors="replace")
    return fields, uploaded


def _file_expiry(fields: dict[str, str], created: int) -> int | None:
    if "expires_after[seconds]" not in fields:
        return None
    seconds = fields["expires_after[seconds]"]
    low, high = OUTPUT_EXPIRY_S
    if fields.get("expires_after[anchor]") != "created_at" or not seconds.isdigit() or not low <= int(seconds) <= high:
        raise images.invalid(
            f"expires_after takes anchor 'created_at' and seconds from {low} to {high}.", "expires_after"
        )
    return created + int(seconds)


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_METADATA_PAIRS:
        raise images.invalid(f"metadata takes at most {MAX_METADATA_PAIRS} key-value pairs.", "metadata")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY or not isinstance(item, str) or len(item) > MAX_METADATA_VALUE:
            raise images.invalid(
                f"metadata keys are strings of at most {MAX_METADATA_KEY} characters and its values strings of at "
                f"most {MAX_METADATA_VALUE}; '{key[:MAX_METADATA_KEY]}' is not.",
                "metadata",
            )
    return dict(value)


def _output_expiry(value: Any) -> int | None:
    if value is None:
        return None
    low, high = OUTPUT_EXPIRY_S
    seconds = value.get("seconds") if isinstance(value, dict) else None
    if (
        not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or not low <= seconds <= high
        or value.get("anchor") != "created_at"
    ):
        raise images.invalid(
            f"output_expires_after takes anchor 'created_at' and seconds from {low} to {high}.",
            "output_expires_after",
        )
    return seconds


def _fetch(url: Any, param: str) -> bytes:
    """An edit line's image_url: a base64 `data:` URL, or an http(s) URL fetched now (10 s, under 50 MB)."""
    if not isinstance(url, str):
        raise images._wrong_type(param, "a string", url)
    data_url = _DATA_URL.fullmatch(url)
    if data_url:
        try:
            return base64.b64decode(data_url.group(1), validate=True)
        except (binascii.Error, ValueError):
            raise images.invalid(f"Invalid '{param}': the data URL is not valid base64.", param) from None
    if not url.startswith(("http://", "https://")):
        raise images.invalid(f"Invalid '{param}': expected a data: URL or an http(s) URL.", param, "invalid_image_url")
    data = bytearray()
    try:
        with httpx.stream("GET", url, timeout=FETCH_TIMEOUT_S) as response:
            if not response.is_success:
                raise images.invalid(
                    f"Invalid '{param}': fetching the image answered HTTP {response.status_code}.",
                    param,
                    "invalid_image_url",
                )
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) >= catalog.MAX_INPUT_IMAGE_BYTES:
                    break  # check_edit refuses it as too large
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise images.invalid(
            f"Invalid '{param}': the image could not be fetched ({exc.__class__.__name__}).", param, "invalid_image_url"
        ) from None
    return bytes(data)
