"""A provider route's circuit breaker, shared by every worker through the route's item in the routes table.

Closed, a route takes every call. After PROVIDER_BREAKER_FAILURES failed calls in a row across jobs (a connection
refused, a 5xx, a timeout, darkroom's key refused) it opens for PROVIDER_BREAKER_OPEN_S: no call goes to it; a job with
a fallback route moves there, and one without waits (darkroom.jobs.run). Then it is half-open: one call, the probe,
taken by a conditional write, tests the route; its success closes the breaker, its failure opens it again. The probe
of a worker that died is taken again after its lease.

A success writes only when its worker saw failures counted before its call (or made the probe): with calls flowing,
every failure is seen by the next calls, whose successes reset the count, so "in a row" holds without a write per job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from darkroom.observability import logger, metrics
from darkroom.ratelimit import RouteStates
from darkroom.settings import settings


@dataclass(frozen=True)
class Gate:
    """What the breaker says before a call. `until` is None when the call may go (as the half-open probe, until
    `probe_until`, if `probe`), else when the route may be tried again. `failures`: the count it read."""

    until: float | None = None
    probe_until: float | None = None
    failures: int = 0

    @property
    def open(self) -> bool:
        return self.until is not None

    @property
    def probe(self) -> bool:
        return self.probe_until is not None


CLOSED = Gate()


def _number(item: dict[str, dict[str, str]], name: str) -> float | None:
    return float(item[name]["N"]) if name in item else None


def admit(route: str, *, probe_lease_s: float, states: RouteStates | None = None) -> Gate:
    """Whether a call to the route may go now; in the half-open state only the one probe goes."""
    threshold = settings().breaker_failures
    if threshold <= 0:
        return CLOSED
    timeline = (states or RouteStates()).timeline(route)
    item = timeline.item()
    failures = int(_number(item, "failures") or 0)
    open_until = _number(item, "open_until")
    if failures < threshold or open_until is None:
        return Gate(failures=failures)
    now = time.time()
    if now < open_until:
        return Gate(until=open_until)
    probe_until = now + probe_lease_s
    taken = timeline.update(
        "SET probe_until = :lease",
        "open_until = :seen AND (attribute_not_exists(probe_until) OR probe_until < :now)",
        {":lease": probe_until, ":seen": open_until, ":now": now},
    )
    if taken is not None:
        logger.info("provider route probed", extra={"route": route})
        return Gate(probe_until=probe_until, failures=failures)
    # Another worker probes: come back when it has likely answered, or its lease has ended.
    held = _number(item, "probe_until") or now
    return Gate(until=max(now + 1, min(held, now + settings().breaker_open_s)))


def record(route: str, gate: Gate, *, failed: bool, states: RouteStates | None = None) -> None:
    """A call's outcome. A failure counts, and opens the breaker at the threshold (or again, after a failed probe),
    never lengthening an open window; a success closes it."""
    s = settings()
    if s.breaker_failures <= 0 or (not failed and not gate.failures and not gate.probe):
        return
    timeline = (states or RouteStates()).timeline(route)
    if not failed:
        timeline.update("REMOVE failures, open_until, probe_until", None, {})
        if gate.failures >= s.breaker_failures:
            logger.info("provider route closed again", extra={"route": route})
        return
    counted = timeline.update("ADD failures :one", None, {":one": 1}) or {}
    failures = int(counted.get("failures", {"N": "0"})["N"])
    if failures < s.breaker_failures:
        return
    now = time.time()
    opened = timeline.update(
        "SET open_until = :until REMOVE probe_until",
        "attribute_not_exists(open_until) OR open_until <= :now",
        {":until": now + s.breaker_open_s, ":now": now},
    )
    if opened is not None:
        metrics.add_metric(name="ProviderCircuitOpened", unit="Count", value=1)
        logger.error(
            "provider route's circuit opened",
            extra={"route": route, "failures": failures, "open_s": s.breaker_open_s},
        )


def release(route: str, gate: Gate, *, states: RouteStates | None = None) -> None:
    """Give the probe back when it made no call (the job was busy, or its inputs were gone): another may take it."""
    if gate.probe_until is not None:
        (states or RouteStates()).timeline(route).update(
            "REMOVE probe_until", "probe_until = :mine", {":mine": gate.probe_until}
        )
