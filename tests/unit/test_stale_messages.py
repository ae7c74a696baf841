"""Which queue messages a job has overtaken (darkroom.jobs.run.is_stale)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from darkroom.jobs.run import is_stale
from darkroom.jobs.store import Job

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def job(status: str, calls: int, next_attempt_at: str | None = None) -> Job:
    return Job(
        id="job_x",
        tenant="t",
        kind="generate",
        status=status,
        request={},
        created_at="",
        updated_at="",
        provider_calls=calls,
        next_attempt_at=next_attempt_at,
    )


@pytest.mark.parametrize(
    ("the_job", "attempt", "stale"),
    [
        (job("queued", 0), 0, False),  # the first message
        (job("running", 1), 0, False),  # the message that claimed it (busy or recovery decides)
        (job("running", 2), 0, True),  # a duplicate from two calls ago
        (job("queued", 1, "2026-11-22T11:59:00Z"), 0, True),  # the retry's own message is still to come
        (job("queued", 1, "2026-11-22T11:59:00Z"), 1, False),  # the retry's own message
        (job("queued", 1, "2026-11-22T11:40:00Z"), 0, False),  # retry 20 min overdue: its message never came
        (job("queued", 1), 0, False),  # no due time recorded: never strand the job
        (job("queued", 1, "2026-11-22T11:59:00Z"), None, False),  # a message without a count
    ],
)
def test_stale_messages(the_job: Job, attempt: int | None, stale: bool) -> None:
    assert is_stale(the_job, attempt, NOW) is stale
