"""The poller state machine's executions, one per polling job and named after it.

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


def execution_arn(job_id: str) -> str:
    machine = settings().poller_state_machine_arn
    return machine.replace(":stateMachine:", ":execution:", 1) + ":" + job_id


def start(job_id: str, execution_input: dict[str, Any]) -> bool:
    """Start the job's execution; False when one of that name already exists (it follows the job already, or did)."""
    try:
        aws.client("stepfunctions").start_execution(
            stateMachineArn=settings().poller_state_machine_arn,
            name=job_id,
            input=json.dumps(execution_input, separators=(",", ":")),
        )
    except Exception as exc:
        if aws.error_code(exc) == "ExecutionAlreadyExists":
            return False
        raise
    return True


def status(job_id: str) -> str | None:
    """RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED; None when the job has no execution."""
    try:
        described = aws.client("stepfunctions").describe_execution(executionArn=execution_arn(job_id))
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
