"""Conditional writes through the local stack are atomic, as in DynamoDB: of racing claims, exactly one wins.

Without this, a duplicate SQS delivery racing its original could make two provider calls locally (the fault run once
saw jobs generated twice this way), and no test of the billing rules could be trusted.
"""

from __future__ import annotations

import contextlib
import threading

from darkroom.ids import new_job_id, now_iso
from darkroom.jobs.store import Job, JobStore, LeaseLost
from darkroom_local.stack import LocalStack

TRIALS = 60
RACERS = 4


def test_racing_claims_on_one_job_let_exactly_one_win(stack: LocalStack) -> None:
    store = JobStore()
    outcomes = []
    for _ in range(TRIALS):
        # Given a queued job and four workers that read it at the same call count
        now = now_iso()
        job = Job(
            id=new_job_id(),
            tenant="dev",
            kind="generate",
            status="queued",
            request={"prompt": "race " * 500, "model": "gpt-image-2"},
            created_at=now,
            updated_at=now,
        )
        store.create(job)
        wins: list[str] = []
        start = threading.Barrier(RACERS)

        def claim(job: Job = job, wins: list[str] = wins, start: threading.Barrier = start) -> None:
            racer = JobStore()
            start.wait()
            with contextlib.suppress(LeaseLost):
                wins.append(racer.claim(job, lease_s=60).lease_id or "")

        # When they all claim at once
        threads = [threading.Thread(target=claim) for _ in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stored = store.get(job.id)
        outcomes.append((job.id, len(wins), stored.provider_calls if stored else None))

    # Then every job was claimed exactly once, by the worker whose lease it holds
    doubled = [outcome for outcome in outcomes if outcome[1] != 1 or outcome[2] != 1]
    assert not doubled, f"{len(doubled)} of {TRIALS} jobs claimed other than once: {doubled[:3]}"
