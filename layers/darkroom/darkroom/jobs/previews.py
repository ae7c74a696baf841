"""Previews of a job's image while the provider renders it (the request's `partial_images`).

Each preview the provider streams is stored in S3 and recorded on the job at once, so GET /v1/jobs/{id} shows it
while the job runs; then a progress document is written beside it, whose arrival sends the `job.progress` webhook
event. None of this may cost the job its image: the provider call is under way and billed, so a preview that cannot
be stored or recorded is logged and passed over while the stream is read on.
"""

from __future__ import annotations

from typing import Any

from darkroom import images, storage
from darkroom.ids import now_iso
from darkroom.jobs.store import Job, JobStore, LeaseLost
from darkroom.jobs.views import progress_document
from darkroom.observability import logger, metrics


class PreviewRecorder:
    """The provider adapter's `on_partial` for one call; `job` is the job as last written."""

    def __init__(self, store: JobStore, job: Job) -> None:
        self.store = store
        self.job = job
        self._lease_lost = False

    def __call__(self, index: int, data: bytes) -> None:
        if self._lease_lost:
            return
        try:
            entry = self._record(index, data)
        except LeaseLost:
            # The job moved on without this worker (its lease ran out): storing the answer will find out too.
            self._lease_lost = True
            return
        except Exception:
            metrics.add_metric(name="PreviewsLost", unit="Count", value=1)
            logger.warning("could not store a preview", exc_info=True, extra={"job_id": self.job.id, "index": index})
            return
        try:
            storage.write_progress(self.job, index, progress_document(self.job, entry))
        except Exception:
            logger.warning("could not announce a preview", exc_info=True, extra={"job_id": self.job.id})

    def _record(self, index: int, data: bytes) -> dict[str, Any]:
        info = images.inspect(data)
        entry = {"index": index, **storage.put_preview(self.job, index, data, info), "created_at": now_iso()}
        # A retried call streams its previews again: each index is kept once, the latest.
        kept = [preview for preview in self.job.previews if preview.get("index") != index]
        self.job = self.store.advance(self.job, previews=[*kept, entry])
        return entry
