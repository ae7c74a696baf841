"""The jobs queue: one small message per attempt of a job; the job itself lives in the table."""

from __future__ import annotations

import json
from typing import Any

from darkroom import aws
from darkroom.settings import settings

MAX_DELAY_S = 900  # SQS's limit for DelaySeconds


def send_job(
    job_id: str,
    tenant: str,
    *,
    attempt: int,
    delay_s: int = 0,
    turn: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """`attempt` is the number of provider calls the job had made when this message was sent: the worker tells a
    duplicate or superseded message from the one the job is waiting for by it. `turn` is the route's turn reserved
    for the job (darkroom.ratelimit), which the message comes back for; `extra`, what else the worker left itself
    (since when the job has waited for its route's breaker)."""
    body: dict[str, Any] = {**(extra or {}), "job_id": job_id, "tenant": tenant, "attempt": attempt}
    if turn:
        body["turn"] = turn
    aws.client("sqs").send_message(
        QueueUrl=settings().jobs_queue_url,
        MessageBody=json.dumps(body),
        DelaySeconds=max(0, min(MAX_DELAY_S, delay_s)),
    )
