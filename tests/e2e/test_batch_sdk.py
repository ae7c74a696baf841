"""The official openai SDK's Files and Batches resources against `darkroom emulator` run as its own process: everything
the emulator answers must parse into the SDK's types."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Final

import openai
import pytest
from openai.types import Batch, ImagesResponse

from tests.e2e.test_emulator_sdk import start_emulator

pytestmark = pytest.mark.e2e

GENERATIONS: Final = "/v1/images/generations"


@pytest.fixture(scope="module")
def sdk() -> Iterator[openai.OpenAI]:
    process, url = start_emulator({"DARKROOM_EMULATOR_BATCH_MS": "1000"})
    yield openai.OpenAI(base_url=f"{url}/v1", api_key="sk-anything", max_retries=0)
    process.terminate()
    assert process.wait(timeout=10) == 0


def upload(sdk: openai.OpenAI, lines: list[dict[str, Any]]) -> str:
    content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    uploaded = sdk.files.create(file=("requests.jsonl", content), purpose="batch")
    assert (uploaded.object, uploaded.purpose, uploaded.bytes, uploaded.status) == (
        "file",
        "batch",
        len(content),
        "processed",
    )
    return uploaded.id


def line(custom_id: str, prompt: str) -> dict[str, Any]:
    body = {"model": "gpt-image-2", "prompt": prompt, "quality": "low", "size": "1024x1024"}
    return {"custom_id": custom_id, "method": "POST", "url": GENERATIONS, "body": body}


def create(sdk: openai.OpenAI, lines: list[dict[str, Any]], **metadata: str) -> Batch:
    return sdk.batches.create(
        input_file_id=upload(sdk, lines), endpoint=GENERATIONS, completion_window="24h", metadata=metadata
    )


def wait_until_ended(sdk: openai.OpenAI, batch_id: str, within_s: float = 10) -> Batch:
    deadline = time.monotonic() + within_s
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled") or time.monotonic() > deadline:
            return batch
        time.sleep(0.05)


def test_files_and_batches_parse_from_upload_to_results(sdk: openai.OpenAI) -> None:
    # Given a batch of two image requests, one that the content policy refuses
    created = create(sdk, [line("job-1", "a lighthouse"), line("job-2", "[refuse] this")], darkroom_batch="b-1")
    assert created.status == "validating" and created.metadata == {"darkroom_batch": "b-1"}
    assert sdk.files.retrieve(created.input_file_id).filename == "requests.jsonl"
    # When it has ended
    done = wait_until_ended(sdk, created.id)
    # Then every field the SDK knows parsed
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (2, 1, 1)
    assert done.usage is not None and done.usage.output_tokens > 0 and done.model == "gpt-image-2"
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.expires_at
    assert done.output_file_id and done.error_file_id
    # And the output line's body is an ImagesResponse, the error line's an OpenAI error
    (output,) = sdk.files.content(done.output_file_id).content.splitlines()
    result = json.loads(output)
    assert result["custom_id"] == "job-1" and result["error"] is None
    images = ImagesResponse.model_validate(result["response"]["body"])
    assert images.data and images.data[0].b64_json and images.size == "1024x1024"
    (refused,) = sdk.files.content(done.error_file_id).content.splitlines()
    assert json.loads(refused)["response"]["body"]["error"]["code"] == "moderation_blocked"


def test_the_list_pages_through_every_batch_newest_first(sdk: openai.OpenAI) -> None:
    ids = [create(sdk, [line("a", f"prompt {i}")]).id for i in range(3)]
    page = sdk.batches.list(limit=1)
    assert page.has_more is True and len(page.data) == 1
    listed = [batch.id for batch in sdk.batches.list(limit=1)]  # the SDK follows `after` from page to page
    assert [batch_id for batch_id in listed if batch_id in ids] == ids[::-1]


def test_a_cancel_parses_as_cancelling_then_cancelled(sdk: openai.OpenAI) -> None:
    created = create(sdk, [line("a", "a fox"), line("b", "an owl")])
    cancelling = sdk.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    cancelled = wait_until_ended(sdk, created.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at and cancelled.error_file_id
    errors = [json.loads(row) for row in sdk.files.content(cancelled.error_file_id).content.splitlines()]
    assert {row["error"]["code"] for row in errors} == {"batch_cancelled"}


def test_refusals_are_the_sdks_errors(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk.batches.retrieve("batch_nothere")
    with pytest.raises(openai.BadRequestError) as wrong_format:
        sdk.files.create(file=("requests.txt", b"{}"), purpose="batch")
    assert wrong_format.value.param == "file"
    with pytest.raises(openai.BadRequestError) as wrong_window:
        sdk.batches.create(
            input_file_id=upload(sdk, [line("a", "x")]),
            endpoint=GENERATIONS,
            completion_window="48h",  # type: ignore[arg-type]
        )
    assert wrong_window.value.param == "completion_window"
