"""EventBridge schedules, locally: invoke a function at its template's rate, as a scheduled rule would.

`rate(...)` expressions run at that rate (or at the stack's own interval, for tests that cannot wait a minute);
`cron(...)` expressions are not run locally.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from darkroom_local.lambdas import LocalFunction

log = logging.getLogger("darkroom.local")
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    match = _RATE.fullmatch(expression.strip())
    if not match:
        return None
    return int(match.group(1)) * _UNIT_S[match.group(2).rstrip("s")]


def scheduled_event(rule_name: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{rule_name}"],
        "detail": {},
    }


class Schedule:
    def __init__(self, function: LocalFunction, expression: str, *, interval_s: float | None = None) -> None:
        self.function = function
        self.expression = expression
        self.interval_s = interval_s or rate_seconds(expression)
        self.invocations = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s is None:
            log.warning("%s: schedule %s is not run locally", self.function.spec.logical_id, self.expression)
            return
        name = f"schedule-{self.function.spec.logical_id}"
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float) -> None:
        if self._thread:
            self._thread.join(timeout=timeout_s)

    def _loop(self) -> None:
        assert self.interval_s is not None
        while not self._stop.wait(self.interval_s):
            self.invocations += 1
            try:
                self.function.invoke(scheduled_event(self.function.spec.logical_id))
            except Exception:
                log.exception("%s failed on its schedule", self.function.spec.logical_id)
