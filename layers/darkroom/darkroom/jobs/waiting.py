"""`Prefer: wait=N` (RFC 7240): a submission answered with the ended job when it ends within N seconds.

The waiting API invocation only reads the job: the job goes through the queue and the worker as any other, so a
waiter holds no provider slot and a waiter that goes away changes nothing. It looks at the job's status alone (a
projected, eventually consistent read: half a read unit whatever the prompt's size), first after a quarter of a
second, then at gaps growing to one second: a 20-second wait costs 22 such reads (`look_times`) and one full read at
the end.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from darkroom.errors import InvalidRequest
from darkroom.jobs.store import Job, JobStore
from darkroom.observability import logger

# API Gateway gives an integration 30 s; the rest is for accepting the job before and answering after.
MAX_WAIT_S = 25
FIRST_LOOK_S = 0.25
GROWTH = 1.5
LONGEST_GAP_S = 1.0

# One preference: a token, optionally `=value` (a token or a quoted string), then `;`-parameters (RFC 7240 section 2).
_PREFERENCE = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,;\s]*))?[^,]*')


def requested_wait(headers: dict[str, str]) -> int:
    """Seconds the client prefers to wait, at most MAX_WAIT_S; 0 when it did not ask. Preferences other than
    `wait` are ignored, as RFC 7240 asks; a `wait` that is not a whole number of seconds is the client's mistake."""
    for match in _PREFERENCE.finditer(headers.get("prefer", "")):
        if match.group(1).lower() != "wait":
            continue
        value = (match.group(2) or "").strip('"')
        if not (value.isascii() and value.isdecimal() and len(value) <= 6):
            raise InvalidRequest(
                f"Prefer: wait takes whole seconds, e.g. 'Prefer: wait={MAX_WAIT_S}' (at most {MAX_WAIT_S} are used).",
                field="Prefer",
                rule="wait_seconds",
            )
        return min(int(value), MAX_WAIT_S)
    return 0


def look_times(seconds: float) -> list[float]:
    """When, in seconds after the job was accepted, a wait of `seconds` looks at the job; the last look is at the
    deadline itself."""
    times: list[float] = []
    at, gap = FIRST_LOOK_S, FIRST_LOOK_S
    while at < seconds:
        times.append(at)
        gap = min(gap * GROWTH, LONGEST_GAP_S)
        at += gap
    if seconds > 0:
        times.append(seconds)
    return times


def wait_for_end(
    store: JobStore,
    job: Job,
    seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Job:
    """The job once it has ended, or as it stands at the deadline (`seconds` from now). The job is accepted by now:
    a read that fails ends the wait with the job as last read (a 202), never an error that would invite the client
    to submit it again."""
    if job.terminal or seconds <= 0:
        return job
    start = clock()
    try:
        for at in look_times(seconds):
            delay = start + at - clock()
            if delay > 0:
                sleep(delay)
            if store.status_of(job.id) in ("succeeded", "failed", "canceled"):
                return store.get(job.id) or job
        return store.get(job.id) or job
    except Exception:
        logger.warning(
            "waiting for a job stopped: its status could not be read", exc_info=True, extra={"job_id": job.id}
        )
        return job
