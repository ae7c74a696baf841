"""OpenAI's Files and Batch APIs over httpx, for the batch tier: upload a JSONL file of image requests, make a batch of
it, follow the batch, and read its results line by line.

Each call is one request, no retries, ended by its deadline (providers/deadline.py), and fails as the images calls
fail (providers/failures.py, secrets redacted): `ProviderUnavailable` when it certainly did nothing,
`ProviderAmbiguous` when it may have, `ProviderRateLimited`, `ProviderRejected` for what OpenAI will never take, and
`ProviderBadResponse` for a 2xx that is not what the API promises. A create whose answer was lost (ambiguous, or
unreadable) may still have made its batch: `find_batch` looks for it by the metadata it was given, so that a crash
or a lost answer never makes the same batch twice.

A results file can hold gigabytes, one line hundreds of MB (ten large images as base64). It is streamed, split on
newlines (a JSON line can hold no raw newline), and each line's `b64_json` values are decoded as they arrive
(providers/images_response.py): memory holds one line's decoded images at a time, never their base64.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from darkroom.errors import ProviderAmbiguous, ProviderBadResponse, ProviderError, ProviderUnavailable
from darkroom.observability import logger
from darkroom.providers import deadline
from darkroom.providers.failures import classify, redact, transport_failures
from darkroom.providers.images_response import GenerationResult, ImagesResponseReader, generation_result
from darkroom.providers.openai import ERROR_BODY_LIMIT, error_from_response, read_bounded

STATUSES = ("validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled")
ENDED = ("failed", "completed", "expired", "cancelled")
# A page of the list is up to PAGE_SIZE batches with their metadata (16 pairs of up to 576 characters each).
JSON_BODY_LIMIT = 4 * 1024 * 1024
PAGE_SIZE = 100
# Batches newer than the one sought that find_batch pages through before it gives up: PAGE_SIZE * MAX_PAGES.
MAX_PAGES = 100
MAX_LINE_IMAGES = 10  # an image request's n is at most 10
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class BatchProblem:
    """One entry of a failed batch's `errors.data`: what OpenAI found wrong, and on which line of the input file."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None


@dataclass(frozen=True)
class Batch:
    """What darkroom follows of a batch."""

    id: str
    status: str
    request_counts: RequestCounts
    output_file_id: str | None
    error_file_id: str | None
    errors: tuple[BatchProblem, ...]
    metadata: dict[str, str] = field(hash=False)
    created_at: int

    @property
    def ended(self) -> bool:
        return self.status in ENDED


@dataclass(frozen=True)
class LineError:
    code: str
    message: str


@dataclass(frozen=True)
class BatchLine:
    """One line of a results file: its request's images, or why it has none."""

    custom_id: str
    status_code: int | None  # None: OpenAI never ran the request (the batch expired or was cancelled first)
    result: GenerationResult | None
    error: LineError | None

    def failure(self) -> ProviderError | None:
        """The line's failure as the provider error the worker's retry policy reads, as if its request had been a
        call of its own."""
        if self.error is None:
            return None
        if self.status_code is None:
            return ProviderUnavailable(f"the batch did not run the request: {self.error.message}".rstrip(": "))
        if 200 <= self.status_code < 300:
            return ProviderBadResponse(self.error.message)
        return classify(self.status_code, httpx.Headers(), self.error.code, self.error.message)


class OpenAIBatchApi(deadline.KeyedClient):
    def upload_file(
        self, data: bytes, filename: str, purpose: str, *, timeout_s: float, expires_s: int | None = None
    ) -> str:
        """The id of a new file: `batch` for a batch's JSONL input, `vision` for an image an edit line names. With
        `expires_s`, OpenAI deletes it that long after it was made."""
        form = {"purpose": purpose}
        if expires_s is not None:
            form |= {"expires_after[anchor]": "created_at", "expires_after[seconds]": str(expires_s)}
        answer = self._call("POST", "files", timeout_s, data=form, files={"file": (filename, data, _type(filename))})
        file_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(file_id, str) or not _ID.fullmatch(file_id):
            raise ProviderBadResponse("the provider took the file without an id darkroom can use")
        return file_id

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        metadata: Mapping[str, str],
        *,
        timeout_s: float,
        output_expires_s: int | None = None,
    ) -> Batch:
        """A new batch of the file's requests, all to `endpoint` (`/v1/images/generations` or `/v1/images/edits`).
        `metadata` (16 pairs at most) is what `find_batch` finds it by should this answer be lost. With
        `output_expires_s`, its output and error files are deleted that long after they were made."""
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": "24h",
            "metadata": dict(metadata),
        }
        if output_expires_s is not None:
            body["output_expires_after"] = {"anchor": "created_at", "seconds": output_expires_s}
        return _batch(self._call("POST", "batches", timeout_s, json=body))

    def retrieve_batch(self, batch_id: str, *, timeout_s: float) -> Batch:
        return _batch(self._call("GET", f"batches/{_path_id(batch_id)}", timeout_s))

    def cancel_batch(self, batch_id: str, *, timeout_s: float) -> Batch:
        """Ask OpenAI to stop the batch: it is `cancelling`, then `cancelled` with what had run in its output file."""
        return _batch(self._call("POST", f"batches/{_path_id(batch_id)}/cancel", timeout_s))

    def find_batch(self, key: str, value: str, *, created_after: int, timeout_s: float) -> Batch | None:
        """The newest batch whose `metadata[key]` is `value`, among those created at or after `created_after` (Unix
        seconds; give some slack for clocks), or None. The list comes newest first, so paging stops at the first
        older batch; each page is one call of `timeout_s`."""
        after: str | None = None
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"limit": PAGE_SIZE}
            if after is not None:
                params["after"] = after
            batches, has_more = _page(self._call("GET", "batches", timeout_s, params=params))
            for batch in batches:
                if batch.created_at < created_after:
                    return None
                if batch.metadata.get(key) == value:
                    return batch
            if not has_more:
                return None
            if not batches or batches[-1].id == after:
                # "More" that cannot be read: saying "none" here could make a batch twice.
                raise ProviderBadResponse("the provider's list of batches could not be read to its end")
            after = batches[-1].id
        # Saying "none" here could make a batch twice; the caller must look again later instead.
        raise ProviderBadResponse(f"more than {PAGE_SIZE * MAX_PAGES} batches are newer than the one sought")

    def read_results(self, file_id: str, *, timeout_s: float) -> Iterator[BatchLine]:
        """A batch's output or error file, line by line as it streams in; the whole read ends by `timeout_s`."""
        for line, _ in self.read_results_from(file_id, start=0, timeout_s=timeout_s):
            yield line

    def read_results_from(self, file_id: str, *, start: int, timeout_s: float) -> Iterator[tuple[BatchLine, int]]:
        """The file's lines from byte `start` on (a line boundary a reader stopped at), each with the byte offset
        just past it, so a reader that runs out of time carries on from there. Asked for with a Range; a provider
        that answers the whole file has its first `start` bytes passed over. Failures of the call are raised as
        they are met while iterating; a line that cannot be read is a BatchLine with an error, and reading goes
        on."""
        api_key = self._api_key()
        url = f"{self.base_url}/files/{_path_id(file_id)}/content"
        sent = time.monotonic()
        ends_at = sent + timeout_s
        timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        headers = {"Authorization": f"Bearer {api_key}", **({"Range": f"bytes={start}-"} if start else {})}
        with transport_failures(timeout_s) as progress:
            request = self._http().build_request("GET", url, headers=headers, timeout=timeout)
            with deadline.within(timeout_s):
                response = self._http().send(request, stream=True)
            try:
                progress.answered = True
                if response.status_code >= 300:
                    with deadline.within(max(0.0, ends_at - time.monotonic())):
                        body = read_bounded(response)
                    raise error_from_response(
                        response.status_code,
                        response.headers,
                        body,
                        elapsed_s=time.monotonic() - sent,
                        secrets=(api_key,),
                    )
                if response.headers.get("content-encoding", "").strip().lower() not in ("", "identity"):
                    raise ProviderBadResponse("the provider answered in an encoding darkroom did not ask for")
                chunks = _chunks_until(response, ends_at, timeout_s)
                if start and response.status_code != 206:
                    chunks = _skipped(chunks, start)  # the whole file: what was read before is passed over
                yield from read_results_lines(chunks, secrets=(api_key,), offset=start)
            finally:
                response.close()

    def _call(self, method: str, path: str, timeout_s: float, **request: Any) -> Any:
        """One API call answered in JSON: the parsed answer, or the provider error it amounts to."""
        api_key = self._api_key()
        sent = time.monotonic()
        with (
            transport_failures(timeout_s) as progress,
            deadline.within(timeout_s),
            self._http().stream(
                method,
                f"{self.base_url}/{path}",
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
                **request,
            ) as response,
        ):
            progress.answered = True
            # An encoded answer is never read (httpx would inflate it whole, past any limit); an error is still
            # judged by its status.
            encoded = response.headers.get("content-encoding", "").strip().lower() not in ("", "identity")
            body = b"" if encoded else read_bounded(response, JSON_BODY_LIMIT + 1)
        if response.status_code >= 300:
            raise error_from_response(
                response.status_code,
                response.headers,
                body[:ERROR_BODY_LIMIT],
                elapsed_s=time.monotonic() - sent,
                secrets=(api_key,),
            )
        if encoded or len(body) > JSON_BODY_LIMIT:
            raise ProviderBadResponse("the provider's answer could not be read")
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise ProviderBadResponse("the provider's answer could not be read") from None


def read_results_lines(
    chunks: Iterable[bytes], *, secrets: tuple[str, ...] = (), offset: int = 0
) -> Iterator[tuple[BatchLine, int]]:
    """The lines of a results file from its bytes in chunks split anywhere, each decoded as its chunks arrive, with
    the byte offset just past each (counted from `offset`). A line darkroom cannot read (not JSON, too large, too
    many images, no custom_id) is a BatchLine with an error and whatever custom_id it could read: the rest of the
    file is still read."""
    reader: ImagesResponseReader | None = None  # the line under way
    broken: str | None = None  # why the line under way cannot be read: the rest of it is passed over
    for chunk in chunks:
        pieces = chunk.split(b"\n")
        for index, piece in enumerate(pieces):
            offset += len(piece) + (1 if index < len(pieces) - 1 else 0)
            if reader is None and broken is None and piece.strip():
                reader = ImagesResponseReader(max_images=MAX_LINE_IMAGES)
            if reader is not None and broken is None and piece:
                try:
                    reader.feed(piece)
                except ProviderBadResponse as exc:
                    broken = exc.message
            if (reader is not None or broken is not None) and index < len(pieces) - 1:
                yield _finished_line(reader, broken, secrets), offset
                reader, broken = None, None
    if reader is not None or broken is not None:
        yield _finished_line(reader, broken, secrets), offset


def _finished_line(reader: ImagesResponseReader | None, broken: str | None, secrets: tuple[str, ...]) -> BatchLine:
    if broken is None and reader is not None:
        try:
            return _batch_line(reader, secrets)
        except ProviderBadResponse as exc:
            broken = exc.message
    logger.warning("a batch results line could not be read", extra={"reason": broken})
    return BatchLine("", None, None, LineError("provider_bad_response", str(broken)))


def _skipped(chunks: Iterator[bytes], count: int) -> Iterator[bytes]:
    """The chunks with their first `count` bytes left out."""
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:]
        count = 0


def _batch_line(reader: ImagesResponseReader, secrets: tuple[str, ...]) -> BatchLine:
    document, images = reader.document()
    custom_id = document.get("custom_id") if isinstance(document, dict) else None
    if not isinstance(custom_id, str):
        raise ProviderBadResponse("the batch's results file has a line darkroom cannot read")
    response, error = document.get("response"), document.get("error")
    status = response.get("status_code") if isinstance(response, dict) else None
    status = status if isinstance(status, int) and not isinstance(status, bool) else None
    if isinstance(error, dict):  # never run: the batch expired or was cancelled before it came to this line
        return BatchLine(custom_id, status, None, _line_error(error, secrets))
    if status is None or not isinstance(response, dict):
        raise ProviderBadResponse("the batch's results file has a line darkroom cannot read")
    body = response.get("body")
    if 200 <= status < 300:
        try:
            return BatchLine(custom_id, status, generation_result(body, images), None)
        except ProviderBadResponse as exc:
            return BatchLine(custom_id, status, None, LineError("provider_bad_response", exc.message))
    answered = body.get("error") if isinstance(body, dict) else None
    return BatchLine(custom_id, status, None, _line_error(answered if isinstance(answered, dict) else {}, secrets))


def _line_error(error: dict[str, Any], secrets: tuple[str, ...]) -> LineError:
    return LineError(str(error.get("code") or ""), redact(str(error.get("message") or ""), secrets))


def _chunks_until(response: httpx.Response, ends_at: float, timeout_s: float) -> Iterator[bytes]:
    """The body's chunks, each read within what is left of the whole read's time."""
    chunks = response.iter_bytes()
    while True:
        left = ends_at - time.monotonic()
        if left <= 0:
            raise ProviderAmbiguous(
                f"the provider's file took longer than {timeout_s:.0f} s", code="provider_timeout", status=200
            )
        with deadline.within(left):
            chunk = next(chunks, None)
        if chunk is None:
            return
        yield chunk


def _batch(document: Any) -> Batch:
    try:
        counts = document.get("request_counts") or {}
        problems = (document.get("errors") or {}).get("data") or []
        metadata = document.get("metadata") or {}
        batch = Batch(
            id=_checked_id(document["id"]),
            status=document["status"],
            request_counts=RequestCounts(
                total=_count(counts.get("total", 0)),
                completed=_count(counts.get("completed", 0)),
                failed=_count(counts.get("failed", 0)),
            ),
            output_file_id=_optional_id(document.get("output_file_id")),
            error_file_id=_optional_id(document.get("error_file_id")),
            errors=tuple(_problem(problem) for problem in problems),
            metadata={str(key): str(value) for key, value in metadata.items()},
            created_at=_count(document["created_at"]),
        )
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ProviderBadResponse("the provider's batch could not be read") from None
    if batch.status not in STATUSES:
        raise ProviderBadResponse("the provider reported a batch status darkroom does not know")
    return batch


def _page(document: Any) -> tuple[list[Batch], bool]:
    """A page of the list. A batch on it darkroom cannot read (a status added later, another tool's odd metadata) is
    left out rather than failing the page: it cannot be one of darkroom's, whose metadata darkroom wrote."""
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list):
        raise ProviderBadResponse("the provider's list of batches could not be read")
    batches = []
    for item in data:
        with contextlib.suppress(ProviderBadResponse):
            batches.append(_batch(item))
    if data and not batches:
        raise ProviderBadResponse("the provider's list of batches could not be read")
    return batches, document.get("has_more") is True


def _problem(problem: Any) -> BatchProblem:
    line, param = problem.get("line"), problem.get("param")
    return BatchProblem(
        code=str(problem.get("code") or ""),
        message=redact(str(problem.get("message") or "")),
        line=line if isinstance(line, int) and not isinstance(line, bool) else None,
        param=param if isinstance(param, str) else None,
    )


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("not a count")
    return value


def _checked_id(value: Any) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError("not an id")
    return value


def _optional_id(value: Any) -> str | None:
    return None if value is None else _checked_id(value)


def _path_id(value: str) -> str:
    """An id as a path segment: only what OpenAI's ids are made of, so no id can point the call elsewhere."""
    if not _ID.fullmatch(value):
        raise ValueError(f"not an OpenAI id: {value[:40]!r}")
    return quote(value, safe="")


def _type(filename: str) -> str:
    if filename.endswith(".jsonl"):
        return "application/jsonl"
    for extension, content_type in ((".png", "image/png"), (".webp", "image/webp"), (".jpg", "image/jpeg")):
        if filename.endswith(extension):
            return content_type
    return "application/octet-stream"
