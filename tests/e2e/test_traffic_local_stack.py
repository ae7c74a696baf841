"""The shared rate limit through the whole local stack, against an emulator that refuses past its own limit."""

from __future__ import annotations

import itertools

import pytest

from darkroom_local.emulator import EmulatorConfig
from tests.e2e.served import api_client, served_stack, wait_for_end

pytestmark = pytest.mark.e2e


def test_jobs_past_the_limit_wait_their_turn_and_the_provider_never_refuses() -> None:
    # Given a provider allowing 120 images a minute, and darkroom told so
    emulator = EmulatorConfig(ipm=120)
    with (
        served_stack(parameters={"ProviderImagesPerMinute": "120"}, emulator=emulator) as stack,
        api_client(stack) as client,
    ):
        # When 16 jobs arrive at once, more than the limit's burst
        ids = [
            client.post("/v1/images/generations", json={"prompt": f"turn {i}", "quality": "low"}).json()["id"]
            for i in range(16)
        ]
        jobs = [wait_for_end(client, job_id, timeout_s=60) for job_id in ids]
        # Then every job succeeded with one call, none was refused, and the calls were spread at the limit's pace
        assert [job["status"] for job in jobs] == ["succeeded"] * 16
        assert stack.emulator is not None
        stats = stack.emulator.stats
        assert stats.limited == 0 and sum(stats.generations.values()) == 16
        admitted = sorted(at for at, _ in stats.admitted)
        # 4 go at once (3% burst, at least one); the other 12 come one turn (62 s / 116) apart at least. Times are
        # taken where the emulator received each call: one call's HTTP latency on a loaded machine (up to a few
        # hundred ms) can land the first late and shorten the span, so one turn of it is allowed.
        turn_s = 62 / 116
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(admitted)]
        assert admitted[-1] - admitted[0] >= 11 * turn_s, f"calls too close together; gaps between them: {gaps}"
