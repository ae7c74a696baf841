"""An asynchronous job over HTTP through the whole local stack, with the template's own polling configuration.

The emulator's WaveSpeed side takes 15 seconds per prediction, and the poller waits as deployed
(AsyncFirstPollSeconds and PollMaxWaitSeconds at their defaults): the job must be seen `polling`, end `succeeded`
with a real image behind its download link, and cost at most 12 state transitions.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from darkroom_local.emulator import EmulatorConfig
from darkroom_local.stack import LocalStack, StackConfig
from tests.conftest import QUIET
from tests.pipeline import execution, submissions, transitions

pytestmark = pytest.mark.e2e

RENDER_MS = 15_000
MAX_TRANSITIONS = 12


@pytest.fixture(scope="module")
def running() -> Iterator[LocalStack]:
    config = StackConfig(port=0, environment=dict(QUIET), emulator=EmulatorConfig(async_ms=RENDER_MS))
    with LocalStack(config) as stack:
        yield stack


def test_a_wavespeed_job_is_seen_polling_and_succeeds_within_twelve_transitions(running: LocalStack) -> None:
    headers = {"Authorization": f"Bearer {running.api_keys['dev']}"}
    with httpx.Client(base_url=running.api_url, headers=headers, timeout=30) as client:
        # Given a frontend asking WaveSpeed for a 1024x1536 JPEG
        prompt = "a lighthouse, rendered slowly"
        answer = client.post(
            "/v1/images/generations",
            json={"prompt": prompt, "provider": "wavespeed", "size": "1024x1536", "output_format": "jpeg"},
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        assert answer.json()["provider"]["route"] == "wavespeed"
        # When it polls the job, it sees it `polling` with the provider's own status
        seen: set[tuple[str, str | None]] = set()
        deadline = time.monotonic() + RENDER_MS / 1000 + 60
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            seen.add((job["status"], job["provider"]["status"]))
            if job["status"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(0.5)
        # Then it saw it polling (with WaveSpeed's status as last polled), and it succeeded with a real 1024x1536 JPEG
        assert {("polling", "created"), ("polling", "processing")} & seen, seen
        assert job["status"] == "succeeded", job
        (output,) = job["outputs"]
        image = Image.open(io.BytesIO(httpx.get(output["url"]).content))
        assert (image.format, image.size) == ("JPEG", (1024, 1536))
        # And the provider was submitted to once, and the state machine took at most 12 transitions
        assert submissions(running, prompt) == 1
        states = transitions(execution(running, job_id))
        print(f"\n15-second async job: {len(states)} state transitions: {' -> '.join(states)}")
        assert len(states) <= MAX_TRANSITIONS, states
