"""The moderation check before any image call, against moto's server and the emulator (which flags `[flag]` in a
text and an image whose top-left pixel is pure red): off, it is never asked; on, a flagged job fails with its
categories and nothing generated or billed, and a check that cannot be made is tried again, never skipped."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from darkroom.jobs.store import Job
from darkroom_local.stack import LocalStack, free_port
from tests.images import image_bytes
from tests.integration.test_edits import edit_json
from tests.pipeline import deliver, generations, job, receive, submit

pytestmark = pytest.mark.usefixtures("calm_provider")


def moderations(stack: LocalStack) -> int:
    assert stack.emulator is not None
    return stack.emulator.stats.moderations


def run_once(stack: LocalStack, job_id: str) -> Job:
    deliver(stack, receive(stack))
    return job(job_id)


def red_edit(stack: LocalStack, prompt: str) -> str:
    """An edit whose only image the emulator's moderation flags (its top-left pixel is pure red)."""
    image = base64.b64encode(image_bytes("png", (64, 48), color=(255, 0, 0))).decode()
    status, accepted = edit_json(stack, {"prompt": prompt, "images": [{"b64_json": image}]})
    assert status == 202, accepted
    return str(accepted["id"])


def test_off_the_check_is_never_made(stack: LocalStack, settings_env: Any) -> None:
    settings_env(MODERATION_MODE="off")
    before = moderations(stack)
    ended = run_once(stack, submit(stack, prompt="unchecked [flag]"))
    assert ended.status == "succeeded" and moderations(stack) == before


def test_a_flagged_prompt_fails_with_its_categories_and_nothing_generated(stack: LocalStack, settings_env: Any) -> None:
    settings_env(MODERATION_MODE="prompt")
    job_id = submit(stack, prompt="a storm over the sea [flag] [flag:self-harm]")
    ended = run_once(stack, job_id)
    assert ended.status == "failed" and ended.error is not None
    assert ended.error["code"] == "moderation_flagged"
    assert ended.error["categories"] == ["self-harm", "violence"]
    assert generations(stack, job_id) == 0 and ended.cost_usd is None and ended.usage is None
    assert ended.settled_at is not None  # its reservation and its place in flight are given back


def test_a_clean_prompt_is_checked_once_and_renders(stack: LocalStack, settings_env: Any) -> None:
    settings_env(MODERATION_MODE="prompt")
    before = moderations(stack)
    job_id = submit(stack, prompt="a calm sea")
    assert run_once(stack, job_id).status == "succeeded"
    assert moderations(stack) == before + 1 and generations(stack, job_id) == 1


def test_an_edits_images_are_checked_only_when_asked(stack: LocalStack, settings_env: Any) -> None:
    settings_env(MODERATION_MODE="prompt")
    assert run_once(stack, red_edit(stack, "recolour it")).status == "succeeded"

    settings_env(MODERATION_MODE="prompt_and_images")
    job_id = red_edit(stack, "recolour it again")
    flagged = run_once(stack, job_id)
    assert flagged.status == "failed" and flagged.error is not None
    assert (flagged.error["code"], flagged.error["categories"]) == ("moderation_flagged", ["violence/graphic"])
    assert generations(stack, job_id) == 0


def test_a_check_that_cannot_be_made_is_retried_and_never_skipped(stack: LocalStack, settings_env: Any) -> None:
    # The job's one route, whose endpoint moderates it too, refuses connections
    settings_env(
        MODERATION_MODE="prompt", PROVIDER_BASE_URL=f"http://127.0.0.1:{free_port()}/v1", PROVIDER_MAX_ATTEMPTS="2"
    )
    job_id = submit(stack, prompt="checked or not at all", provider="openai")
    waiting = run_once(stack, job_id)
    assert waiting.status == "queued" and waiting.transient_failures == 1
    ended = run_once_after_retry(stack, job_id)
    assert ended.status == "failed" and ended.error is not None
    assert ended.error["code"] == "moderation_unavailable"
    assert generations(stack, job_id) == 0


def run_once_after_retry(stack: LocalStack, job_id: str) -> Job:
    deliver(stack, receive(stack, wait_s=3))  # the retry's message, a second or two later
    return job(job_id)
