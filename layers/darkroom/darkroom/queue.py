"""The jobs queue: one small message per attempt of a job; the job itself lives in the table."""

from __future__ import annotations

import json

from darkroom import aws
from darkroom.settings import settings

MAX_DELAY_S = 900  # SQS's limit for DelaySeconds


def send_job(job_id: str, tenant: str, *, delay_s: int = 0) -> None:
    aws.client("sqs").send_message(
        QueueUrl=settings().jobs_queue_url,
        MessageBody=json.dumps({"job_id": job_id, "tenant": tenant}),
        DelaySeconds=max(0, min(MAX_DELAY_S, delay_s)),
    )
