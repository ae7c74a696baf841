"""Result manifests: the last word on a job, and what tells the rest of darkroom (webhooks) that it ended.

A terminal write keeps the job in the sweep index; only a confirmed manifest takes it out. So a job that ended but
lost its manifest (S3 failed right after, the writer died) is found by the sweeper and given one, even when no
message is left to bring it back: every ended job gets its manifest, and so its webhook, and is counted in its
tenant's usage and quotas first (darkroom.usage.settle, once however often it runs).
"""

from __future__ import annotations

from darkroom import storage, usage
from darkroom.jobs.store import Job, JobStore
from darkroom.jobs.views import manifest_document


def publish(store: JobStore, job: Job) -> None:
    """Count the job that has just ended in its tenant's usage, write its manifest, then take it out of the
    sweeper's sight (which is what makes sure both happen)."""
    usage.settle(job)
    storage.write_manifest(job, manifest_document(job))
    store.manifest_written(job)


def ensure(store: JobStore, job: Job) -> None:
    """Make sure an ended job is counted and has its manifest (written again only if missing), and say so."""
    usage.settle(job)
    if not storage.manifest_exists(job):
        storage.write_manifest(job, manifest_document(job))
    if job.sweep_at is not None:
        store.manifest_written(job)
