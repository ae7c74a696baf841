"""When each try of a webhook delivery is made: configuration, read by the settings without importing httpx.

The schedule has one entry per try, each the wait since the one before: the first entry is the first try itself
(counted from the job's end), so a schedule of n entries makes n tries at most. A redelivery on purpose starts it
over.
"""

from __future__ import annotations

import random

# Standard Webhooks' own: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h later: 8 tries in all.
DEFAULT_SCHEDULE_S = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


def next_delay_s(tries_made: int, schedule: tuple[int, ...], retry_after: float | None = None) -> float | None:
    """Seconds before try number `tries_made + 1` (0 tries made: the first try's own entry), or None when the
    schedule is spent. Each delay gets up to 10% jitter, so subscribers coming back from an outage are not hit by
    every retry at once; a subscriber's `retry-after` lengthens a delay, never shortens it, and never past the
    schedule's longest."""
    if tries_made >= len(schedule):
        return None
    delay = float(schedule[tries_made])
    if retry_after is not None:
        delay = min(max(delay, retry_after), float(max(schedule)))
    return delay * random.uniform(1.0, 1.1)


MAX_DELAY_S = 86_400  # a day between tries at most, as the template's parameter says


def parse_schedule(text: str) -> tuple[int, ...]:
    """WEBHOOK_RETRY_SCHEDULE_S ("0,5,300,..."), each delay held to MAX_DELAY_S; the default if unreadable (the
    template's AllowedPattern refuses that before it deploys)."""
    try:
        schedule = tuple(min(MAX_DELAY_S, int(part)) for part in text.split(",") if part.strip())
    except ValueError:
        return DEFAULT_SCHEDULE_S
    return schedule if schedule and all(delay >= 0 for delay in schedule) else DEFAULT_SCHEDULE_S
