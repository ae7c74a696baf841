"""Make moto's DynamoDB apply one request at a time, as DynamoDB applies each conditional write atomically.

darkroom's billing promise rests on conditional writes: of two workers claiming a job at the same call count, one
wins. moto's server handles requests in threads and checks a condition, then writes, with nothing in between held:
measured with four threads racing to claim one job, more than one claim won in about one trial in ten. A duplicate
SQS delivery racing its original could then make two provider calls locally where AWS never would, so the fault run
saw jobs generated twice. Serialising moto's DynamoDB requests restores DynamoDB's guarantee; the other services'
requests are untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_lock = threading.RLock()
_patched = False
_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"}
# Called with (action, request, status, body) after each write, when a stack records a trail.
_observer: Callable[[str, dict[str, Any], int, Any], None] | None = None


def watch_writes(observer: Callable[[str, dict[str, Any], int, Any], None] | None) -> None:
    global _observer
    _observer = observer


def serialise_dynamodb() -> None:
    """Idempotent: patch moto's DynamoDB request handler once per process."""
    global _patched
    if _patched:
        return
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with _lock:
            result = original(self)
            observer = _observer
            if observer is not None:
                action = self.get_endpoint_name(self.headers)
                if action in _WRITES:
                    observer(action, dict(self.body), result[0], result[2])
            return result

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _patched = True
