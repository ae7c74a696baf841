"""The poller state machines' executions: one per polling job, named after it, or one per batch of batch-tier jobs
(darkroom.batches), named after the batch.

The name is the guard: Step Functions refuses a second execution of the same name (and answers a repeated start of a
running one with the same execution), so a duplicate message or a sweep that starts "again" is harmless. Kept apart
from the polling logic so the api function can stop an execution without importing any provider adapter.
"""

from __future__ import annotations

import json
from typing import Any

from darkroom import aws
from darkroom.observability import logger
from darkroom.settings import settings

RUNNING = "RUNNING"


def _machine(machine: str | None) -> str:
    return machine or settings().poller_state_machine_arn


def execution_arn(job_id: str, machine: str | None = None) -> str:
    return _machine(machine).replace(":stateMachine:", ":execution:", 1) + ":" + job_id


def start(job_id: str, execution_input: dict[str, Any], machine: str | None = None) -> bool:
    """Start the job's (or batch's) execution of `machine` (the job poller's by default); False when one of that
    name already exists (it follows the job already, or did)."""
    try:
        aws.client("stepfunctions").start_execution(
            stateMachineArn=_machine(machine),
            name=job_id,
            input=json.dumps(execution_input, separators=(",", ":")),
        )
    except Exception as exc:
        if aws.error_code(exc) == "ExecutionAlreadyExists":
            return False
        raise
    return True


def status(job_id: str, machine: str | None = None) -> str | None:
    """RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED; None when the job has no execution."""
    try:
        described = aws.client("stepfunctions").describe_execution(executionArn=execution_arn(job_id, machine))
    except Exception as exc:
        if aws.error_code(exc) == "ExecutionDoesNotExist":
            return None
        raise
    return str(described["status"])


def stop(job_id: str, *, cause: str) -> None:
    """Stop the job's execution if it runs. Best effort: an execution left running finds the job ended at its next
    poll and stops by itself."""
    try:
        aws.client("stepfunctions").stop_execution(executionArn=execution_arn(job_id), cause=cause)
    except Exception as exc:
        if aws.error_code(exc) != "ExecutionDoesNotExist":
            logger.warning("could not stop a poller execution", extra={"job_id": job_id}, exc_info=True)
