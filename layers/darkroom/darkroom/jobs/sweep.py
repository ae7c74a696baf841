"""The sweeper: a scheduled pass that moves on jobs nothing else will move, through the same rules as the worker.

It reads only the sparse `by_sweep` index (never a scan), and only entries older than SWEEP_GRACE_S:
- a `queued` job whose message was never confirmed sent (the api or a worker died between its write and its send,
  or SQS refused the send and the withdrawal failed too) gets its message, then the confirmation;
- a `running` job whose lease ran out (its worker died) is recovered without a provider call: finished from S3 if
  the provider had answered and every output is stored, failed as `interrupted` otherwise;
- a `polling` job is looked at once its poller should long have ended, or at once if its poller's start was never
  confirmed: an execution that was never started is started (by the job's name, so never twice); one that ended
  without ending the job (aborted, or its last write failed) gets one last poll, which ends the job either way;
- a batch-tier job no batch took within a day (the batcher was down all along) fails; one past its batch's deadline
  whose batch poller is no longer running fails (one still running is looked at again in an hour);
- an ended job whose manifest was never confirmed written gets it (written again only if missing).
A job whose message was confirmed sent is not in the index, so a backlogged queue is never sent duplicates. Every
change is a conditional write, so a sweep racing a worker or another sweep changes nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from darkroom import queue
from darkroom.jobs import executions, manifests, polling
from darkroom.jobs.run import recover_abandoned
from darkroom.jobs.store import Job, JobStore, LeaseLost
from darkroom.observability import logger, metrics
from darkroom.settings import settings

# Jobs one pass looks at; a larger backlog is taken by the next passes, a minute apart.
MAX_JOBS_PER_PASS = 200
# Time kept back so a pass never runs into its function's timeout mid-job.
STOP_BEFORE_END_MS = 10_000
# A polling job's last look may poll the provider and download its outputs (polling.POLL_TIMEOUT_S and
# DOWNLOAD_TIMEOUT_S): one is only started with this much time left, else it waits for the next pass.
LAST_POLL_MS = 90_000


@dataclass
class SweepReport:
    examined: int = 0
    resent: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    pollers: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    # Uploads whose files all arrived but whose event was lost or late: sent to the uploads function again.
    renotified: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def moved(self) -> int:
        return (
            len(self.resent)
            + len(self.recovered)
            + len(self.manifests)
            + len(self.pollers)
            + len(self.expired)
            + len(self.renotified)
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "moved": self.moved}


def sweep(remaining_ms: Callable[[], int]) -> SweepReport:
    store = JobStore()
    report = SweepReport()
    for job_id in store.due_for_sweep(time.time() - settings().sweep_grace_s, limit=MAX_JOBS_PER_PASS):
        if remaining_ms() < STOP_BEFORE_END_MS:
            break
        report.examined += 1
        try:
            _sweep_job(store, job_id, report, remaining_ms)
        except LeaseLost:
            pass  # the job moved on while we looked: someone else is handling it
        except Exception:
            # One job's trouble (S3 down for its manifest, say) must not stop the pass; it stays due for the next.
            report.failed.append(job_id)
            logger.exception("sweeper could not move a job on", extra={"job_id": job_id})
    if report.moved:
        metrics.add_metric(name="JobsSwept", unit="Count", value=report.moved)
    counts = {name: len(ids) if isinstance(ids, list) else ids for name, ids in report.as_dict().items()}
    logger.info("sweep done", extra=counts)
    return report


def _sweep_job(store: JobStore, job_id: str, report: SweepReport, remaining_ms: Callable[[], int]) -> None:
    job = store.get(job_id)
    if job is None or job.sweep_at is None:
        return  # the index lags the table: already handled
    if job.terminal:
        manifests.ensure(store, job)
        report.manifests.append(job.id)
        logger.warning("sweeper confirmed an ended job's manifest", extra={"job_id": job.id, "tenant": job.tenant})
    elif job.status == "queued":
        _resend(store, job)
        report.resent.append(job.id)
    elif job.status == "awaiting_upload":
        from darkroom.uploads import expire  # only a pass that finds an expired upload pays for its imports

        outcome = expire(store, job)
        (report.expired if outcome == "expired" else report.renotified).append(job.id)
        logger.info(f"sweeper {outcome} an upload", extra={"job_id": job.id, "tenant": job.tenant})
    elif job.status == "running" and job.lease_expired():
        recover_abandoned(store, job)
        report.recovered.append(job.id)
        logger.warning("sweeper recovered a job whose worker died", extra={"job_id": job.id, "tenant": job.tenant})
    elif job.tier == "batch" and job.status in ("batch_queued", "polling"):
        if _sweep_batch_job(store, job):
            report.expired.append(job.id)
    elif job.status == "polling" and remaining_ms() >= LAST_POLL_MS:
        outcome = polling.check_on(store, job)
        if outcome != "running":
            report.pollers.append(job.id)
            logger.warning("sweeper took care of a polling job", extra={"job_id": job.id, "outcome": outcome})


BATCH_LOOK_AGAIN_S = 3600.0


def _sweep_batch_job(store: JobStore, job: Job) -> bool:
    """A batch-tier job due: True if it was ended here."""
    s = settings()
    if job.status == "batch_queued" and not job.batch_id:
        job = store.fail_batch_queued(
            job, code="batch_not_sent", message="No batch took this job within a day; it was never sent or billed."
        )
    elif job.status == "polling" and executions.status(job.batch_id or "", s.batch_poller_state_machine_arn) not in (
        executions.RUNNING,
        None,
    ):
        message = f"darkroom stopped following this job's batch; {polling.MAY_HAVE_CHARGED}"
        job = store.finish_polling(job, "failed", error={"code": "poller_failed", "message": message})
    else:
        # In a batch being sent (the batcher carries it on), or whose poller still runs (or is about to start).
        store.sweep_again_at(job, time.time() + BATCH_LOOK_AGAIN_S)
        return False
    manifests.publish(store, job)
    logger.warning("sweeper ended a batch job", extra={"job_id": job.id, "status": job.status})
    return True


def _resend(store: JobStore, job: Job) -> None:
    """The message the job waits for, at its current call count and not before its retry is due."""
    due = job.next_attempt_due
    delay_s = max(0, round((due - datetime.now(UTC)).total_seconds())) if due else 0
    queue.send_job(job.id, job.tenant, attempt=job.provider_calls, delay_s=delay_s)
    store.message_sent(job)
    logger.warning("sweeper re-sent a job's lost message", extra={"job_id": job.id, "tenant": job.tenant})
