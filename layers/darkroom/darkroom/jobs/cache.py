"""The opt-in cache: a job that asked for it (`cache: true`) and matches one of its tenant's succeeded cached jobs
(same fingerprint: darkroom.jobs.store.Job.cache_fingerprint) that ended within CacheMaxAgeSeconds ends
`succeeded` with copies of that job's images, `cached_from` naming it, and no provider call or cost.

The worker looks before it claims the job, so a hit is never a provider call, and the ending is conditional on the
job still being untouched: a duplicate delivery that got there first leaves this one nothing to do. Only jobs that
asked for the cache and generated their images become sources; the fingerprint starts with the tenant and a source
must be the same tenant's, so no tenant ever gets another's images.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from darkroom import aws, storage
from darkroom.jobs import manifests
from darkroom.jobs.store import Job, JobStore
from darkroom.observability import logger, metrics
from darkroom.settings import settings

DAY_S = 86400


def max_age_s() -> int:
    """CacheMaxAgeSeconds, kept a day inside the outputs' lifecycle: a source's images must still be there."""
    s = settings()
    return max(0, min(s.cache_max_age_s, (s.output_retention_days - 1) * DAY_S))


def serve(store: JobStore, job: Job) -> bool:
    """End a queued cached job from its newest matching source; False when there is none (it is generated)."""
    fingerprint, max_age = job.cache_fingerprint(), max_age_s()
    if fingerprint is None or max_age == 0:
        return False
    since = (datetime.now(UTC) - timedelta(seconds=max_age)).isoformat(timespec="milliseconds")
    for source_id in store.cache_sources(fingerprint, ended_since=since.replace("+00:00", "Z")):
        source = store.get(source_id)
        if not _serves(source, job, fingerprint):
            continue
        assert source is not None
        # Keys of this attempt's own: a stale delivery losing the race below to a worker that generated the job's
        # images must not have copied over them.
        attempt = uuid.uuid4().hex[:12]
        try:
            outputs = [
                storage.copy_output(output, job, f"cached-{attempt}-{i}") for i, output in enumerate(source.outputs)
            ]
        except Exception as exc:
            if aws.error_code(exc) not in ("404", "NoSuchKey"):
                raise  # S3 may answer next time: the message comes back
            continue  # its images are gone: try an older source, or generate
        job = store.serve_from_cache(job, source=source, outputs=outputs)
        logger.info("job served from the cache", extra={"job_id": job.id, "cached_from": job.cached_from})
        metrics.add_metric(name="CacheHits", unit="Count", value=1)
        manifests.ensure(store, job)
        return True
    return False


def _serves(source: Job | None, job: Job, fingerprint: str) -> bool:
    return (
        source is not None
        and source.tenant == job.tenant
        and source.status == "succeeded"
        and source.cache_key == fingerprint
        and len(source.outputs) == int(job.request.get("n") or 1)
    )
