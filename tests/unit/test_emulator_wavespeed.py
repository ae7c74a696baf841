"""The emulator's WaveSpeed side: submit, poll through created -> processing -> completed | failed, download the
outputs it serves, its envelope and refusals, and submissions counted per prompt (each one is billed)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from darkroom_local.emulator import Emulator, EmulatorConfig

AUTH = {"Authorization": "Bearer ws-test"}
SUBMIT = "/api/v3/openai/gpt-image-2/text-to-image"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    running = Emulator(EmulatorConfig(async_ms=600))
    running.start("127.0.0.1", 0)
    yield running
    running.stop()


def submit(emulator: Emulator, body: dict[str, Any], path: str = SUBMIT) -> httpx.Response:
    return httpx.post(f"{emulator.url}{path}", json=body, headers=AUTH, timeout=10)


def poll_until_ended(emulator: Emulator, url: str) -> tuple[list[str], dict[str, Any]]:
    seen: list[str] = []
    for _ in range(100):
        data = httpx.get(url, headers=AUTH, timeout=10).json()["data"]
        if not seen or seen[-1] != data["status"]:
            seen.append(data["status"])
        if data["status"] in ("completed", "failed"):
            return seen, data
        time.sleep(0.05)
    raise AssertionError(f"prediction never ended: {seen}")


def test_a_prediction_is_created_processed_and_completed_with_real_outputs(emulator: Emulator) -> None:
    # Given a submission in WaveSpeed's shape
    answer = submit(emulator, {"prompt": "a heron", "size": "1536*1024", "quality": "low", "output_format": "webp"})
    # Then it is accepted in the envelope, created, with the URL to poll
    assert answer.status_code == 200
    body = answer.json()
    assert (body["code"], body["message"], body["data"]["status"]) == (200, "success", "created")
    # When it is polled until it ends
    seen, data = poll_until_ended(emulator, body["data"]["urls"]["get"])
    # Then it went through processing, and its output is a real 1536x1024 WebP the emulator serves
    assert seen[-2:] == ["processing", "completed"] and data["has_nsfw_contents"] == [False]
    assert data["timings"]["inference"] == 600
    (url,) = data["outputs"]
    image = Image.open(io.BytesIO(httpx.get(url, timeout=10).content))
    assert (image.format, image.size) == ("WEBP", (1536, 1024))
    assert emulator.calls()["prompts"]["a heron"] == {
        "requests": 1,
        "generations": 1,
        "submissions": 1,
        "batched": 0,
        "edits": [],
    }


def test_a_refused_prompt_is_a_failed_prediction_flagged_by_moderation(emulator: Emulator) -> None:
    answer = submit(emulator, {"prompt": "[refuse] this"})
    _, data = poll_until_ended(emulator, answer.json()["data"]["urls"]["get"])
    assert data["status"] == "failed" and data["has_nsfw_contents"] == [True] and "moderation" in data["error"]
    assert data["outputs"] == []
    # Submitted, so billed; never generated
    assert emulator.calls()["prompts"]["[refuse] this"] == {
        "requests": 1,
        "generations": 0,
        "submissions": 1,
        "batched": 0,
        "edits": [],
    }


@pytest.mark.parametrize(
    ("body", "path", "status"),
    [
        ({"prompt": "x", "quality": "hd"}, SUBMIT, 400),
        ({"prompt": "x", "size": "1000x"}, SUBMIT, 400),
        ({"prompt": "x", "size": "4000*4000"}, SUBMIT, 400),
        ({"prompt": "x", "n": 2}, SUBMIT, 400),
        ({"prompt": ""}, SUBMIT, 400),
        ({"prompt": "x"}, "/api/v3/openai/dall-e-3/text-to-image", 404),
    ],
    ids=["quality", "size-format", "size-too-large", "unknown-parameter", "empty-prompt", "unknown-model"],
)
def test_refused_submissions_are_answered_in_the_envelope_and_never_billed(
    emulator: Emulator, body: dict[str, Any], path: str, status: int
) -> None:
    answer = submit(emulator, body, path)
    assert answer.status_code == status and answer.json()["code"] == status and answer.json()["data"] is None
    assert emulator.calls()["totals"]["submissions"] == 0


def test_sync_mode_answers_with_the_ended_prediction(emulator: Emulator) -> None:
    answer = submit(emulator, {"prompt": "a wren", "enable_sync_mode": True})
    assert answer.json()["data"]["status"] == "completed" and len(answer.json()["data"]["outputs"]) == 1


def test_an_unknown_prediction_and_a_missing_key_are_refused(emulator: Emulator) -> None:
    unknown = httpx.get(f"{emulator.url}/api/v3/predictions/{'0' * 32}/result", headers=AUTH, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["code"] == 404
    anonymous = httpx.post(f"{emulator.url}{SUBMIT}", json={"prompt": "x"}, timeout=10)
    assert anonymous.status_code == 401 and emulator.calls()["totals"]["submissions"] == 0


def test_a_slow_submit_is_billed_though_the_client_never_saw_its_answer() -> None:
    # Given a provider that accepts every submission, then answers only after the client has given up
    emulator = Emulator(EmulatorConfig(fault_rate=1.0, fault_kinds=("slow",), hang_ms=5_000, async_ms=100))
    emulator.start("127.0.0.1", 0)
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{emulator.url}{SUBMIT}", json={"prompt": "lost answer"}, headers=AUTH, timeout=0.5)
        # Then the submission counts: resubmitting blindly would bill it twice
        assert emulator.calls()["prompts"]["lost answer"]["submissions"] == 1
    finally:
        emulator.stop()


def test_faults_on_submit_and_poll_come_in_the_envelope() -> None:
    emulator = Emulator(EmulatorConfig(fault_rate=1.0, fault_kinds=("rate_limit",), retry_after_s=2))
    emulator.start("127.0.0.1", 0)
    try:
        refused = httpx.post(f"{emulator.url}{SUBMIT}", json={"prompt": "busy"}, headers=AUTH, timeout=10)
        poll = httpx.get(f"{emulator.url}/api/v3/predictions/{'0' * 32}/result", headers=AUTH, timeout=10)
    finally:
        emulator.stop()
    assert refused.status_code == 429 and refused.json()["code"] == 429 and refused.headers["retry-after"] == "2"
    assert poll.status_code == 429 and emulator.calls()["totals"]["submissions"] == 0
