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

# RFC 7240's grammar: preferences split by commas, each a token, an optional `=value`, then `;`-parameters, where any
# value may be a quoted string holding commas, semicolons or `=`. The header is read as a run of these pieces.
_PIECE = re.compile(r'"(?:[^"\\]|\\.)*"?|[,;=]|[^",;=\s]+|\s+')
# delta-seconds (RFC 9111 section 1.2.2): a value too large to hold is taken as the largest, not refused.
_LONGEST_DIGITS = 6


def _preferences(header: str) -> list[tuple[str, str]]:
    """(name, value) of each preference in a Prefer header, parameters left out, quotes taken off values."""
    found: list[tuple[str, str]] = []
    name, value, state = "", "", "name"  # state: name, value (after `=`), rest (parameters, until a comma)
    for piece in _PIECE.findall(header):
        if piece == ",":
            if name:
                found.append((name, value))
            name, value, state = "", "", "name"
        elif piece.isspace():
            continue
        elif state == "name" and not name:
            name = piece
        elif state == "name" and piece == "=":
            state = "value"
        elif state == "value" and piece not in ";=":
            value, state = _unquoted(piece), "rest"
        else:
            state = "rest"
    if name:
        found.append((name, value))
    return found


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def requested_wait(headers: dict[str, str]) -> int:
    """Seconds the client prefers to wait, at most MAX_WAIT_S; 0 when it did not ask. Preferences other than
    `wait` are ignored, as RFC 7240 asks; a `wait` that is not a whole number of seconds is the client's mistake."""
    for name, value in _preferences(headers.get("prefer", "")):
        if name.lower() != "wait":
            continue
        if not (value.isascii() and value.isdecimal()):
            raise InvalidRequest(
                f"Prefer: wait takes whole seconds, e.g. 'Prefer: wait={MAX_WAIT_S}' (at most {MAX_WAIT_S} are used).",
                field="Prefer",
                rule="wait_seconds",
            )
        digits = value.lstrip("0")
        return MAX_WAIT_S if len(digits) > _LONGEST_DIGITS else min(int(digits or "0"), MAX_WAIT_S)
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
