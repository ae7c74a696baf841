"""What the worker does with a message for a job that has not ended (darkroom.jobs.run.message_verdict)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from darkroom.jobs.run import DROP, LATER, PROCESS, message_verdict
from darkroom.jobs.store import Job

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def job(status: str, calls: int, next_attempt_at: str | None = None, lease_s: float = 86_400) -> Job:
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
        lease_until=time.time() + lease_s,
    )


@pytest.mark.parametrize(
    ("the_job", "attempt", "verdict"),
    [
        (job("queued", 0), 0, PROCESS),  # the first message
        (job("running", 1), 0, PROCESS),  # the message that claimed it (busy or recovery decides)
        (job("running", 2), 0, DROP),  # a duplicate from two calls ago, while the owner works
        (job("running", 2, lease_s=-1), 0, PROCESS),  # ...but once the owner is gone, any message may recover it
        (job("queued", 1, "2026-11-22T11:59:00Z"), 0, LATER),  # the retry's own message may still come
        (job("queued", 1, "2026-11-22T11:59:00Z"), 1, PROCESS),  # the retry's own message
        (job("queued", 1, "2026-11-22T11:40:00Z"), 0, PROCESS),  # retry 20 min overdue: its message never came
        (job("queued", 1), 0, PROCESS),  # no due time recorded: never strand the job
        (job("queued", 1, "2026-11-22T11:59:00Z"), None, PROCESS),  # a message without a count
    ],
)
def test_message_verdicts(the_job: Job, attempt: int | None, verdict: str) -> None:
    assert message_verdict(the_job, attempt, NOW) == verdict
