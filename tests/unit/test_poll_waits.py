"""The poller's waits: the first about the job's typical render time, then a third of it doubling to a cap.

State transitions are what a Standard workflow bills: each poll costs three (Wait, the poll, the Choice), plus one
for the end. These tests walk the schedule for jobs of known render times, as the state machine would.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from darkroom import aws
from darkroom.jobs.polling import MAX_POLLS, first_wait_s, next_wait_s
from darkroom.jobs.store import Job


@pytest.fixture(autouse=True)
def deployed_defaults(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("ASYNC_FIRST_POLL_S", "POLL_MAX_WAIT_S"):
        monkeypatch.delenv(name, raising=False)  # the template's defaults: 15 s and 30 s
    aws.reset()
    yield
    monkeypatch.undo()
    aws.reset()


def job(**request: str) -> Job:
    return Job("job_x", "t", "generate", "polling", {"prompt": "p", **request}, "", "", route="wavespeed")


def transitions(render_s: float, polled: Job) -> int:
    """State transitions until the first poll at or after `render_s` sees the job done."""
    at, polls = float(first_wait_s(polled)), 1
    while at < render_s:
        at += next_wait_s(polls, polled)
        polls += 1
    return 3 * polls + 1


def test_the_first_wait_follows_quality_and_size() -> None:
    assert first_wait_s(job()) == 15
    assert first_wait_s(job(quality="low")) == 8
    assert first_wait_s(job(quality="high")) == 30
    assert first_wait_s(job(quality="high", size="3840x2160")) == 60


def test_a_fifteen_second_job_takes_at_most_twelve_transitions_whatever_its_quality() -> None:
    for quality in ("low", "medium", "auto", "high"):
        assert transitions(15, job(quality=quality)) <= 12, quality


def test_a_job_done_within_twice_its_typical_time_is_seen_by_the_third_poll() -> None:
    # (Beyond a 45 s typical time, PollMaxWaitSeconds caps the waits first: one poll more.)
    for request in ({"quality": "low"}, {}, {"quality": "high"}, {"size": "2048x2048"}):
        polled = job(**request)
        assert transitions(2 * first_wait_s(polled), polled) <= 10, request


def test_waits_grow_to_the_cap_so_a_slow_job_costs_few_polls() -> None:
    polled = job()
    assert [next_wait_s(n, polled) for n in range(1, 6)] == [5, 10, 20, 30, 30]
    # A 4-minute job: 11 polls, 34 transitions ($0.00085 at $0.025 per 1,000)
    assert transitions(240, polled) == 34


def test_however_the_waits_are_configured_a_job_fits_the_execution_history(monkeypatch: pytest.MonkeyPatch) -> None:
    # One-second waits over a day would be 86,400 polls: 777,600 history events against Step Functions' 25,000
    monkeypatch.setenv("POLL_MAX_WAIT_S", "1")
    monkeypatch.setenv("POLL_TIMEOUT_S", "86400")
    aws.reset()
    polled = job()
    at, polls = float(first_wait_s(polled)), 1
    while at < 86_400:
        at += next_wait_s(polls, polled)
        polls += 1
    assert polls <= MAX_POLLS
    assert 9 * polls + 4 < 25_000
