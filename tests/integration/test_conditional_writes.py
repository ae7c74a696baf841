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


def test_a_job_created_in_a_transaction_that_was_sent_twice_is_created_once(stack: LocalStack) -> None:
    """A transaction that landed and lost its answer is sent again by boto under the same request token; DynamoDB
    makes that a no-op for ten minutes, moto never does. Either way the job is created once and no error reaches the
    client."""
    from darkroom import aws
    from darkroom.jobs.idempotency import IdempotencyKey

    real = aws.client("dynamodb")

    class SentTwice:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def transact_write_items(self, **request: object) -> object:
            real.transact_write_items(**request)  # landed; its answer was lost on the way back
            return real.transact_write_items(**request)  # the retry

    now = now_iso()
    job = Job(
        id=new_job_id(), tenant="dev", kind="generate", status="queued", request={}, created_at=now, updated_at=now
    )
    key = IdempotencyKey("dev", new_job_id(), "fingerprint")
    JobStore(client=SentTwice()).create(job, together_with=[key.put_item(job.id)])
    stored = JobStore().get(job.id)
    assert stored is not None and stored.write_id == job.write_id
