"""darkroom's Files and Batch API client against the in-process emulator: a batch's round trip, results files split
anywhere and read a line at a time, a huge line decoded without its base64, finding a batch by its metadata, and every
failure as the provider error the images calls raise."""

from __future__ import annotations

import base64
import io
import json
import random
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image

from darkroom.errors import (
    ProviderAmbiguous,
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderRefused,
    ProviderRejected,
    ProviderUnavailable,
)
from darkroom.providers import batches
from darkroom.providers.batches import BatchLine, OpenAIBatchApi, read_results_lines
from darkroom_local.emulator import FAULT_KINDS, Emulator, EmulatorConfig
from darkroom_local.stack import free_port
from tests.images import image_bytes

GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"
KEY = "sk-darkroom-test-0123456789"
TIMEOUT_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Provider:
    api: OpenAIBatchApi
    emulator: Emulator
    clock: Clock


@pytest.fixture
def provider(emulator: Emulator) -> Provider:
    """A fresh emulator whose batches live one second on a clock the test moves."""
    emulator.config = EmulatorConfig(batch_ms=1000, hang_ms=5000)
    emulator.reset()
    clock = Clock()
    emulator.batches.clock = clock
    return Provider(OpenAIBatchApi(f"{emulator.url}/v1", lambda: KEY), emulator, clock)


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def request_line(custom_id: str, prompt: str, url: str = GENERATIONS, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {"prompt": prompt, "quality": "low", **body}}


def start_batch(provider: Provider, lines: list[dict[str, Any]], endpoint: str = GENERATIONS, **metadata: str) -> str:
    file_id = provider.api.upload_file(jsonl(lines), "requests.jsonl", "batch", timeout_s=TIMEOUT_S)
    return provider.api.create_batch(file_id, endpoint, metadata, timeout_s=TIMEOUT_S).id


def results_line(custom_id: str, images: list[bytes], status: int = 200) -> bytes:
    data = [{"b64_json": base64.b64encode(image).decode(), "revised_prompt": "r"} for image in images]
    body = {"created": 1, "data": data, "usage": {"input_tokens": 3, "output_tokens": 9, "total_tokens": 12}}
    response = {"status_code": status, "request_id": "req_1", "body": body}
    return json.dumps({"id": "batch_req_1", "custom_id": custom_id, "response": response, "error": None}).encode()


def served(chunks: Any, status: int = 200, headers: dict[str, str] | None = None) -> OpenAIBatchApi:
    """A client whose every call is answered by `chunks` (an iterable of bytes, streamed as it comes)."""
    transport = httpx.MockTransport(lambda request: httpx.Response(status, headers=headers, content=chunks))
    return OpenAIBatchApi("https://api.example/v1", lambda: KEY, transport=transport)


def test_a_batch_goes_from_upload_to_each_lines_images(provider: Provider) -> None:
    # Given three generation requests in one batch, tagged with darkroom's own id for it
    sizes = {"j1": (1024, 1024), "j2": (1536, 1024), "j3": (1024, 1536)}
    lines = [request_line(job, f"prompt for {job}", size=f"{w}x{h}") for job, (w, h) in sizes.items()]
    batch_id = start_batch(provider, lines, darkroom_batch="b-1")
    # When it has run its course
    waiting = provider.api.retrieve_batch(batch_id, timeout_s=TIMEOUT_S)
    provider.clock.now = 1.0
    done = provider.api.retrieve_batch(batch_id, timeout_s=TIMEOUT_S)
    # Then the client followed it from validating to completed with every field darkroom needs
    assert (waiting.status, waiting.ended, waiting.metadata) == ("validating", False, {"darkroom_batch": "b-1"})
    assert done.status == "completed" and done.ended and done.errors == ()
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 3, 0)
    assert done.output_file_id and done.error_file_id is None and done.created_at > 0
    # And each line of the output file carries its job's images, usage and no error
    assert done.output_file_id is not None
    results = list(provider.api.read_results(done.output_file_id, timeout_s=TIMEOUT_S))
    assert [line.custom_id for line in results] == ["j1", "j2", "j3"]
    for line in results:
        assert line.status_code == 200 and line.error is None and line.failure() is None
        assert line.result is not None and line.result.usage and line.result.usage["output_tokens"] > 0
        (image,) = line.result.images
        assert Image.open(io.BytesIO(image)).size == sizes[line.custom_id]


def test_edit_lines_name_images_uploaded_for_vision(provider: Provider) -> None:
    # Given an image uploaded as a vision file and an edit batch whose line names it
    image_id = provider.api.upload_file(image_bytes(size=(64, 48)), "source.png", "vision", timeout_s=TIMEOUT_S)
    batch_id = start_batch(provider, [request_line("e1", "tint", EDITS, images=[{"file_id": image_id}])], EDITS)
    # When the batch completes
    provider.clock.now = 1.0
    done = provider.api.retrieve_batch(batch_id, timeout_s=TIMEOUT_S)
    assert done.output_file_id is not None
    (line,) = provider.api.read_results(done.output_file_id, timeout_s=TIMEOUT_S)
    # Then the edit kept the source's size
    assert line.result is not None
    assert Image.open(io.BytesIO(line.result.images[0])).size == (64, 48)


def test_refused_and_expired_lines_come_back_as_errors_the_retry_policy_reads(provider: Provider) -> None:
    # Given batches that expire half done, and a batch whose second line the content policy refuses
    provider.emulator.config.batch_outcome = "expire"
    lines = [request_line("ok", "a fox"), request_line("nsfw", "[refuse] x"), request_line("late", "an owl")]
    batch_id = start_batch(provider, [*lines, request_line("later", "a hare")])
    # When it expires
    provider.clock.now = 1.0
    done = provider.api.retrieve_batch(batch_id, timeout_s=TIMEOUT_S)
    assert done.status == "expired" and done.error_file_id is not None
    errors = {line.custom_id: line for line in provider.api.read_results(done.error_file_id, timeout_s=TIMEOUT_S)}
    # Then the refusal is OpenAI's 400, final as a refused call is; the lines never run were certainly not generated
    refused = errors["nsfw"]
    assert (refused.status_code, refused.error and refused.error.code) == (400, "moderation_blocked")
    assert isinstance(refused.failure(), ProviderRefused)
    for job in ("late", "later"):
        expired = errors[job]
        assert expired.status_code is None and expired.error is not None and expired.error.code == "batch_expired"
        assert isinstance(expired.failure(), ProviderUnavailable)


def test_a_cancelled_batch_keeps_what_ran(provider: Provider) -> None:
    # Given a batch of two lines, one run
    batch_id = start_batch(provider, [request_line("a", "a fox"), request_line("b", "an owl")])
    provider.clock.now = 0.1 + 0.7 / 2 + 0.001
    # When it is cancelled, and read once its cancelling is over
    cancelling = provider.api.cancel_batch(batch_id, timeout_s=TIMEOUT_S)
    provider.clock.now += 0.1
    cancelled = provider.api.retrieve_batch(batch_id, timeout_s=TIMEOUT_S)
    # Then the line that ran is in the output file and the other was cancelled
    assert (cancelling.status, cancelled.status) == ("cancelling", "cancelled")
    assert cancelled.output_file_id is not None and cancelled.error_file_id is not None
    assert [line.custom_id for line in provider.api.read_results(cancelled.output_file_id, timeout_s=TIMEOUT_S)] == [
        "a"
    ]
    (line,) = provider.api.read_results(cancelled.error_file_id, timeout_s=TIMEOUT_S)
    assert (line.custom_id, line.error and line.error.code) == ("b", "batch_cancelled")


def test_a_malformed_input_file_is_a_failed_batch_with_its_problems(provider: Provider) -> None:
    batch_id = start_batch(provider, [request_line("a", "x"), request_line("a", "y")])
    provider.clock.now = 0.1
    failed = provider.api.retrieve_batch(batch_id, timeout_s=TIMEOUT_S)
    assert failed.status == "failed" and failed.ended
    assert [(problem.code, problem.line, problem.param) for problem in failed.errors] == [
        ("duplicate_custom_id", 2, "custom_id")
    ]


@pytest.mark.parametrize("size", [1, 3, 7, 64, 4096, 1 << 20])
def test_a_results_file_split_anywhere_reads_the_same(size: int) -> None:
    # Given a results file of three lines (images of awkward lengths, a refusal, a blank line, no final newline)
    images = [random.Random(n).randbytes(n) for n in (1, 100, 1001)]
    refusal = {
        "status_code": 400,
        "request_id": "r",
        "body": {"error": {"code": "moderation_blocked", "message": "no"}},
    }
    refused = json.dumps({"id": "x", "custom_id": "c", "response": refusal, "error": None}).encode()
    content = results_line("a", images[:2]) + b"\n\n" + refused + b"\r\n" + results_line("b", images[2:])
    chunks = [content[i : i + size] for i in range(0, len(content), size)]
    # When it is streamed in chunks of `size` bytes
    lines = list(served(chunks).read_results("file-results", timeout_s=TIMEOUT_S))
    # Then every line, image and error comes out exactly
    assert [(line.custom_id, line.status_code) for line in lines] == [("a", 200), ("c", 400), ("b", 200)]
    assert lines[0].result is not None and lines[0].result.images == images[:2]
    assert lines[0].result.usage == {"input_tokens": 3, "output_tokens": 9, "total_tokens": 12}
    assert lines[0].result.revised_prompts == ["r", "r"]
    assert lines[1].error == batches.LineError("moderation_blocked", "no")
    assert lines[2].result is not None and lines[2].result.images == images[2:]


def test_a_huge_line_is_decoded_as_it_streams_without_holding_its_base64() -> None:
    # Given a line of four 3 MB images, its base64 made only as it is sent, 64 KiB at a time
    rng = random.Random(11)
    images = [rng.randbytes(3_000_000) for _ in range(4)]

    def stream() -> Iterator[bytes]:
        yield b'{"id": "batch_req_1", "custom_id": "big", "error": null, "response": {"status_code": 200, "body": '
        yield b'{"created": 1, "data": ['
        for index, image in enumerate(images):
            yield b', {"b64_json": "' if index else b'{"b64_json": "'
            for start in range(0, len(image), 48 * 1024):
                yield base64.b64encode(image[start : start + 48 * 1024])
            yield b'"}'
        yield b"]}}}\n"

    decoded = sum(len(image) for image in images)
    # When it is read under tracemalloc
    tracemalloc.start()
    (line,) = served(stream()).read_results("file-big", timeout_s=TIMEOUT_S)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Then its images are whole, and memory peaked near one copy of them (holding the base64 too would be 7/3)
    assert line.result is not None and line.result.images == images
    assert peak < 1.5 * decoded, f"peak {peak / 1e6:.1f} MB for {decoded / 1e6:.1f} MB of images"


def test_unreadable_lines_fail_alone_and_the_lines_after_them_still_read() -> None:
    # A 200 line without images is that line's error, and the next line still reads
    empty = b'{"custom_id": "a", "response": {"status_code": 200, "body": {"data": []}}, "error": null}'
    (first, _), (second, end) = read_results_lines([empty + b"\n" + results_line("b", [b"img"])])
    assert first.error is not None and first.error.code == "provider_bad_response"
    assert isinstance(first.failure(), ProviderBadResponse)
    assert second.result is not None and second.result.images == [b"img"]
    assert end == len(empty) + 1 + len(results_line("b", [b"img"]))
    # A line that is not JSON, or has no custom_id, is an error of no job, and the line after it still reads
    for content in (b"not json\n", b'{"response": {"status_code": 200}}\n', b'{"custom_id": "a"}\n'):
        (broken, _), (after, _) = read_results_lines([content + results_line("c", [b"img"])])
        assert broken.custom_id == "" and broken.error is not None and after.custom_id == "c"


def test_a_batch_is_found_by_its_metadata_among_recent_batches(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three batches, each tagged with darkroom's id for it, and a list served one batch per page
    ids = [start_batch(provider, [request_line("a", "x")], darkroom_batch=f"b{i}", kind="gen") for i in range(3)]
    monkeypatch.setattr(batches, "PAGE_SIZE", 1)
    created = provider.api.retrieve_batch(ids[0], timeout_s=TIMEOUT_S).created_at
    # When each is looked for, and one that was never made
    found = [provider.api.find_batch("darkroom_batch", f"b{i}", created_after=0, timeout_s=TIMEOUT_S) for i in range(3)]
    missing = provider.api.find_batch("darkroom_batch", "b9", created_after=0, timeout_s=TIMEOUT_S)
    # Then each is found, across pages, and the one never made is not
    assert [batch.id if batch else None for batch in found] == ids
    assert missing is None
    # And batches older than the time given are never looked at
    too_late = provider.api.find_batch("darkroom_batch", "b0", created_after=created + 60, timeout_s=TIMEOUT_S)
    assert too_late is None


def test_the_search_stops_once_batches_are_older_than_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a list whose only batch is older than the search reaches, and that claims there is more
    old = {"id": "batch_old", "status": "completed", "created_at": 100, "metadata": {"darkroom_batch": "b0"}}
    pages: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        pages.append(str(request.url))
        return httpx.Response(200, json={"object": "list", "data": [old], "has_more": True})

    api = OpenAIBatchApi("https://api.example/v1", lambda: KEY, transport=httpx.MockTransport(answer))
    # When a batch made after it is looked for / Then one page was read, and nothing found
    assert api.find_batch("darkroom_batch", "b1", created_after=200, timeout_s=TIMEOUT_S) is None
    assert pages == ["https://api.example/v1/batches?limit=100"]


@pytest.mark.parametrize(
    ("kind", "error", "code"),
    [
        ("server_error", ProviderUnavailable, "provider_unavailable"),
        ("rate_limit", ProviderRateLimited, "rate_limited"),
        ("hang", ProviderAmbiguous, "provider_timeout"),
    ],
)
def test_faults_are_the_provider_errors_the_images_calls_raise(
    provider: Provider, kind: str, error: type[Exception], code: str
) -> None:
    # Given a provider that answers every call with one kind of fault
    assert kind in FAULT_KINDS
    provider.emulator.config.fault_rate, provider.emulator.config.fault_kinds = 1.0, (kind,)
    # When a batch is created / Then the failure is classified as an images call's would be
    with pytest.raises(error) as caught:
        provider.api.create_batch("file-x", GENERATIONS, {}, timeout_s=0.5)
    assert getattr(caught.value, "code", None) == code


def test_answers_that_refuse_are_final_and_never_show_the_key(provider: Provider) -> None:
    # An unknown batch or file is OpenAI's 404: final
    with pytest.raises(ProviderRejected) as unknown:
        provider.api.retrieve_batch("batch_nothere", timeout_s=TIMEOUT_S)
    assert (unknown.value.code, unknown.value.status) == ("provider_rejected", 404)
    with pytest.raises(ProviderRejected):
        list(provider.api.read_results("file-nothere", timeout_s=TIMEOUT_S))
    # A batch OpenAI would not make is a 400 naming why
    with pytest.raises(ProviderRejected, match="Supported values"):
        provider.api.create_batch("file-x", "/v1/chat/completions", {}, timeout_s=TIMEOUT_S)
    # A key the provider refuses is an auth failure whose message shows nothing of the key
    provider.emulator.config.api_key = "sk-the-right-one"
    with pytest.raises(ProviderRejected) as refused:
        provider.api.retrieve_batch("batch_x", timeout_s=TIMEOUT_S)
    assert refused.value.code == "provider_auth" and KEY[-4:] not in refused.value.message
    # An error message quoting the key is redacted
    quoted = {"error": {"message": f"bad key {KEY}", "code": "invalid_request"}}
    with pytest.raises(ProviderRejected) as redacted:
        served([json.dumps(quoted).encode()], status=400).retrieve_batch("batch_x", timeout_s=TIMEOUT_S)
    assert KEY not in redacted.value.message and "[redacted]" in redacted.value.message


def test_no_provider_and_unreadable_answers(provider: Provider) -> None:
    # Nothing listening: the call certainly did nothing
    nobody = OpenAIBatchApi(f"http://127.0.0.1:{free_port()}/v1", lambda: KEY)
    with pytest.raises(ProviderUnavailable):
        nobody.retrieve_batch("batch_x", timeout_s=TIMEOUT_S)
    # A 2xx that is not the promised JSON, or a batch with a status nobody knows, is a bad response
    with pytest.raises(ProviderBadResponse):
        served([b"<html>"]).retrieve_batch("batch_x", timeout_s=TIMEOUT_S)
    strange = {"id": "batch_x", "status": "paused", "created_at": 1}
    with pytest.raises(ProviderBadResponse, match="status"):
        served([json.dumps(strange).encode()]).retrieve_batch("batch_x", timeout_s=TIMEOUT_S)
    with pytest.raises(ProviderBadResponse):
        served([b'{"object": "file"}']).upload_file(b"{}", "in.jsonl", "batch", timeout_s=TIMEOUT_S)
    # A compressed results file is never inflated
    with pytest.raises(ProviderBadResponse, match="encoding"):
        list(served([b"x"], headers={"content-encoding": "gzip"}).read_results("file-x", timeout_s=TIMEOUT_S))


def test_a_line_is_typed_for_the_poller() -> None:
    line = BatchLine("job-1", 429, None, batches.LineError("rate_limit_exceeded", "slow down"))
    assert isinstance(line.failure(), ProviderRateLimited)
