"""A provider route's rate limit, shared by every worker: images and requests per minute, as turns handed out in
order (the generic cell rate algorithm: a token bucket kept as one timestamp per route, in the routes table).

A worker asks for its job's turn before it claims the job. The answer is a time: now when the bucket has room, or
later, in which case that turn is reserved for the job and its message is sent again to come back then (no provider
call is made, no attempt is spent, and jobs come back in the order they asked, not as a herd). One or two
conditional writes per job, whatever the backlog, and workers asking at once never conflict.

Why the refill is slower than the limit: a provider counts any 60 s window (the emulator does too). A bucket that
holds `burst` turns and refills at r per second hands out at most burst + r * 60 in any 60 s; messages may come
back up to DELIVERY_JITTER_S late and bunch, so r = (limit - burst) / (60 + DELIVERY_JITTER_S) keeps every window at
or under the limit. With a 3% burst that uses about 94% of the limit. A job asking for more images than the burst
waits for a full bucket and then runs it into debt (a turn cannot be split): only then can a window hold up to
n - burst more.

Limits come from configuration (PROVIDER_IMAGES_PER_MINUTE, PROVIDER_REQUESTS_PER_MINUTE) and from the provider's
own `x-ratelimit-*` headers as answers arrive (the lower wins); a 429 pushes every turn past its `retry-after`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from darkroom import aws
from darkroom.observability import logger
from darkroom.settings import settings

WINDOW_S = 60.0
BURST_SHARE = 0.03
DELIVERY_JITTER_S = 2.0
# Farthest ahead a turn is reserved: a message waits 15 minutes at most (SQS), with a minute to spare.
MAX_AHEAD_S = 840.0
# How long a worker trusts the limits it read from the route's item (the provider's announced ones).
LIMITS_TTL_S = 60.0


def _interval_s(per_minute: int) -> float:
    """Seconds between two units once the burst is used (see the module's docstring for why not 60 / limit)."""
    return (WINDOW_S + DELIVERY_JITTER_S) / max(per_minute - _burst(per_minute), 0.5)


def _burst(per_minute: int) -> int:
    return max(1, math.ceil(per_minute * BURST_SHARE))


def turn_at(tat: float, now: float, cost_s: float, tolerance_s: float) -> float:
    """The earliest time at or after `now` when a request costing `cost_s` may go, given the timeline's theoretical
    arrival time `tat` (a request costing more than the tolerance waits for a full bucket)."""
    return max(now, tat - tolerance_s + min(cost_s, tolerance_s))


def tat_after(tat: float, at: float, cost_s: float) -> float:
    """The timeline's theoretical arrival time once a request costing `cost_s` went at `at`."""
    return max(tat, at) + cost_s


@dataclass(frozen=True)
class Pace:
    """A route's limits as one timeline: a request of n images costs the longer of n images' and one request's
    share of the minute, and the bucket holds the smaller of the two bursts. Every window then keeps both limits."""

    images_per_minute: int = 0
    requests_per_minute: int = 0

    def __bool__(self) -> bool:
        return bool(self.images_per_minute or self.requests_per_minute)

    def cost_s(self, images: int) -> float:
        return max(
            images * _interval_s(self.images_per_minute) if self.images_per_minute else 0.0,
            _interval_s(self.requests_per_minute) if self.requests_per_minute else 0.0,
        )

    @property
    def tolerance_s(self) -> float:
        return min(
            _burst(limit) * _interval_s(limit) for limit in (self.images_per_minute, self.requests_per_minute) if limit
        )

    def turn(self, tat: float, now: float, images: int) -> float:
        return turn_at(tat, now, self.cost_s(images), self.tolerance_s)

    def after(self, tat: float, at: float, images: int) -> float:
        return tat_after(tat, at, self.cost_s(images))


@dataclass(frozen=True)
class RouteLimits:
    """What the routes table says of a route's limits: the ones the provider's headers announced (0: none)."""

    learned_images: int = 0
    learned_requests: int = 0


def parse_per_minute(text: str) -> dict[str, int]:
    """ "60" (every route) or "openai=60,wavespeed=30" ({route or "*": limit}); entries that are not positive whole
    numbers are left out (the template's AllowedPattern refuses them first)."""
    limits: dict[str, int] = {}
    for entry in text.split(","):
        route, _, value = entry.rpartition("=")
        route, value = route.strip() or "*", value.strip()
        if value.isdigit() and int(value) > 0:
            limits.setdefault(route, int(value))
    return limits


def _configured(limits: dict[str, int], route: str) -> int:
    return limits.get(route, limits.get("*", 0))


def _lower(configured: int, learned: int) -> int:
    return min(value for value in (configured, learned) if value) if configured or learned else 0


class Timeline:
    """A GCRA timeline (`tat`, the bucket's theoretical arrival time) in one DynamoDB item. It only ever moves
    forward, by single conditional updates, so writers asking at once never conflict: each lands on its own turn."""

    def __init__(self, table: str, key: dict[str, Any], client: Any = None) -> None:
        self.table, self.key = table, key
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("dynamodb")

    def item(self) -> dict[str, Any]:
        return dict(self.client.get_item(TableName=self.table, Key=self.key, ConsistentRead=True).get("Item") or {})

    def update(self, expression: str, condition: str | None, values: dict[str, Any]) -> dict[str, Any] | None:
        """One UpdateItem of numbers; the attributes it wrote, or None when its condition failed."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": self.key,
            "UpdateExpression": expression,
            "ReturnValues": "UPDATED_NEW",
        }
        if values:
            request["ExpressionAttributeValues"] = {name: {"N": repr(value)} for name, value in values.items()}
        if condition:
            request["ConditionExpression"] = condition
        try:
            return dict(self.client.update_item(**request).get("Attributes") or {})
        except Exception as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise

    def take(self, cost_s: float, *, tolerance_s: float, ahead_s: float) -> tuple[float, bool]:
        """The next turn for a request costing `cost_s`, reserved if it comes within `ahead_s` of now: (turn, True);
        otherwise nothing is reserved: (when its turn would have been, False).

        Two conditional updates cover every case, and the timeline only grows, so this settles in one or two
        writes whatever other writers do: while the timeline is ahead of now the cost is added to it (the turn is
        read from the result); when it has fallen behind, it restarts from now."""
        # One `now` for every try: whichever update fails, the other's condition then holds for that same moment
        # (the timeline only grows), so a loser never ping-pongs between the two as the clock moves.
        now = time.time()
        latest = now + ahead_s + tolerance_s - min(cost_s, tolerance_s)  # the latest `tat` whose turn is in reach
        for _ in range(3):
            ahead = self.update(
                "SET tat = tat + :cost",
                "tat > :now AND tat <= :latest",
                {":cost": cost_s, ":now": now, ":latest": latest},
            )
            if ahead is not None:
                return turn_at(float(ahead["tat"]["N"]) - cost_s, now, cost_s, tolerance_s), True
            if self.update(
                "SET tat = :tat",
                "attribute_not_exists(tat) OR tat <= :now",
                {":tat": tat_after(0.0, now, cost_s), ":now": now},
            ):
                return now, True
            tat = float(self.item().get("tat", {"N": "0"})["N"])
            if tat > latest:
                return turn_at(tat, now, cost_s, tolerance_s), False
        return time.time() + random.uniform(1, 3), False  # not reached in practice: ask again soon

    def push(self, tat: float) -> None:
        """Move the timeline to `tat` at least."""
        self.update("SET tat = :tat", "attribute_not_exists(tat) OR tat < :tat", {":tat": tat})


class RouteStates:
    """The routes table: one item per route (its turns' timeline, the limits the provider announced, its breaker)."""

    def __init__(self, table: str | None = None, client: Any = None) -> None:
        self.table = table or settings().routes_table
        self._client = client

    def timeline(self, route: str) -> Timeline:
        return Timeline(self.table, {"route": {"S": route}}, self._client)


# Each function instance's recent read of every route's announced limits: (read at, limits).
_limits_read: dict[str, tuple[float, RouteLimits]] = {}


def pace_for(route: str, states: RouteStates) -> Pace:
    """The route's limits now: configuration and the provider's announced ones, the lower of each."""
    read = _limits_read.get(route)
    if read is None or time.monotonic() - read[0] > LIMITS_TTL_S:
        item = states.timeline(route).item()
        limits = RouteLimits(
            int(item.get("learned_images", {"N": "0"})["N"]), int(item.get("learned_requests", {"N": "0"})["N"])
        )
        read = (time.monotonic(), limits)
        _limits_read[route] = read
    s, learned = settings(), read[1]
    return Pace(
        _lower(_configured(s.images_per_minute, route), learned.learned_images),
        _lower(_configured(s.requests_per_minute, route), learned.learned_requests),
    )


@dataclass(frozen=True)
class Turn:
    """When a job may call the provider (`at`, epoch seconds). `reserved` is False when its turn lies beyond what a
    message can wait for: nothing was reserved, and the job asks again when it comes back."""

    at: float
    reserved: bool = True

    def wait_s(self, now: float | None = None) -> float:
        return max(0.0, self.at - (time.time() if now is None else now))


def take_turn(route: str, images: int, *, states: RouteStates | None = None) -> Turn:
    """Reserve the route's next turn for one request of `images` images; no write when nothing limits the route."""
    states = states or RouteStates()
    pace = pace_for(route, states)
    if not pace:
        return Turn(time.time())
    at, reserved = states.timeline(route).take(pace.cost_s(images), tolerance_s=pace.tolerance_s, ahead_s=MAX_AHEAD_S)
    return Turn(at if reserved else min(at, time.time() + MAX_AHEAD_S), reserved)


def hold_off(route: str, seconds: float, *, states: RouteStates | None = None) -> None:
    """The provider answered 429: no turn of the route starts before `seconds` from now (nothing to do on a route
    with no known limit, whose turns are not taken)."""
    states = states or RouteStates()
    pace = pace_for(route, states)
    if pace:
        # A one-image turn comes at `until` at the earliest.
        until = time.time() + seconds
        states.timeline(route).push(until + pace.tolerance_s - min(pace.cost_s(1), pace.tolerance_s))


RATE_HEADERS = {"images": "x-ratelimit-limit-images", "requests": "x-ratelimit-limit-requests"}


def announced_limits(headers: Mapping[str, str]) -> dict[str, int]:
    """The per-minute limits a provider's answer announces ({"images": n, "requests": n}), when it says them."""
    found = {}
    for kind, name in RATE_HEADERS.items():
        value = str(headers.get(name, "")).strip()
        if value.isdigit() and 0 < int(value) < 10_000_000:
            found[kind] = int(value)
    return found


def learn(route: str, announced: Mapping[str, int], *, states: RouteStates | None = None) -> None:
    """Keep the limits the provider announced (`announced_limits`) when they differ from what this instance last
    read or wrote: the headers repeat the same numbers on every answer."""
    read = _limits_read.get(route)
    current = read[1] if read else None
    wanted = RouteLimits(
        announced.get("images", current.learned_images if current else 0),
        announced.get("requests", current.learned_requests if current else 0),
    )
    if wanted == current:
        return
    states = states or RouteStates()
    states.timeline(route).update(
        "SET learned_images = :images, learned_requests = :requests",
        None,
        {":images": wanted.learned_images, ":requests": wanted.learned_requests},
    )
    _limits_read[route] = (time.monotonic(), wanted)
    logger.info("provider announced its limits", extra={"route": route, **announced})
