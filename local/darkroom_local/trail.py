"""A per-job trail of what the local stack saw: every message delivered, every DynamoDB write and its outcome, and
every provider call as the emulator saw it.

A fault run that finds a job breaking a rule prints the job's trail with the run's seed, so the failure can be read
step by step rather than guessed at. Recording is off unless a stack asks for it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from typing import Any


class Trail:
    def __init__(self) -> None:
        self._started = time.monotonic()
        self._events: dict[str, list[tuple[float, str, dict[str, Any]]]] = defaultdict(list)
        self._lock = threading.Lock()

    def record(self, job_id: str, kind: str, **details: Any) -> None:
        at = time.monotonic() - self._started
        with self._lock:
            self._events[job_id].append((at, kind, details))

    def for_job(self, job_id: str) -> list[tuple[float, str, dict[str, Any]]]:
        with self._lock:
            return sorted(self._events.get(job_id, []), key=lambda event: event[0])

    def format(self, job_id: str) -> str:
        lines = [f"trail of {job_id}:"]
        for at, kind, details in self.for_job(job_id):
            lines.append(f"  {at:9.3f}s {kind:<10} {json.dumps(details, default=str, sort_keys=True)}")
        return "\n".join(lines)

    # What the stack's hooks call

    def dynamodb_write(self, action: str, request: dict[str, Any], status: int, body: Any) -> None:
        key = (request.get("Key") or request.get("Item") or {}).get("id", {}).get("S")
        if not key:
            return
        values = request.get("ExpressionAttributeValues") or {}
        names = request.get("ExpressionAttributeNames") or {}
        sets = {
            names.get(name, name): _plain(values.get(value))
            for name, value in _assignments(request.get("UpdateExpression", ""))
            if names.get(name, name) in _WATCHED
        }
        if "Item" in request:
            sets = {name: _plain(request["Item"].get(name)) for name in _WATCHED if name in request["Item"]}
        outcome = "ok" if status < 300 else _error_type(body)
        self.record(key, "write", action=action, sets=sets, outcome=outcome)

    def provider_call(self, request_id: str, outcome: str) -> None:
        """The emulator's side: what it did with a call darkroom tagged `{job}:{call count}`."""
        job_id, _, attempt = request_id.partition(":")
        self.record(job_id, "provider", call=attempt, outcome=outcome)

    def delivery(self, queue: str, body: str, receive_count: str, outcome: str) -> None:
        try:
            message = json.loads(body)
            job_id = str(message["job_id"])
        except (ValueError, KeyError, TypeError):
            return
        self.record(
            job_id, "message", queue=queue, attempt=message.get("attempt"), receives=receive_count, outcome=outcome
        )


# The attributes whose changes tell a job's story; the request and outputs would drown it.
_WATCHED = (
    "status",
    "phase",
    "provider_calls",
    "lease_id",
    "lease_until",
    "transient_failures",
    "rate_limits",
    "error",
)


def _assignments(expression: str) -> list[tuple[str, str]]:
    set_part = expression.split(" REMOVE ")[0].removeprefix("SET ")
    pairs = []
    for assignment in set_part.split(","):
        name, _, value = assignment.partition("=")
        pairs.append((name.strip(), value.strip()))
    return pairs


def _plain(value: Any) -> Any:
    if not isinstance(value, dict) or len(value) != 1:
        return value
    ((_, inner),) = value.items()
    return inner


def _error_type(body: Any) -> str:
    try:
        return str(json.loads(body).get("__type", "error")).rsplit("#", 1)[-1]
    except (ValueError, AttributeError, TypeError):
        return "error"
