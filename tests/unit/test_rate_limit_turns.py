"""The shared rate limit's arithmetic (darkroom.ratelimit.Pace): whatever the order and timing of requests, and
however late their messages come back, no 60-second window holds more than the limit."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from darkroom.ratelimit import DELIVERY_JITTER_S, WINDOW_S, Pace, _burst, announced_limits, parse_per_minute


def schedule(pace: Pace, arrivals: list[tuple[float, int]], seed: int) -> list[tuple[float, int]]:
    """(time of the provider call, images) for requests asking at the given times: each call is made at its turn,
    up to DELIVERY_JITTER_S late, as a delayed message comes back."""
    rng = random.Random(seed)
    tat, calls = 0.0, []
    for now, units in arrivals:
        at = pace.turn(tat, now, units)
        tat = pace.after(tat, at, units)
        calls.append((at + rng.uniform(0, DELIVERY_JITTER_S), units))
    return calls


def busiest_window(calls: list[tuple[float, int]]) -> int:
    """The most images in any window of WINDOW_S seconds, counted as the provider (and the emulator) counts."""
    ordered = sorted(calls)
    return max(sum(units for at, units in ordered if end - WINDOW_S < at <= end) for end, _ in ordered)


arrivals = st.lists(
    st.tuples(st.floats(min_value=0, max_value=5, allow_nan=False), st.integers(min_value=1, max_value=10)),
    min_size=1,
    max_size=150,
)


def as_times(gaps: list[tuple[float, int]], cap: int) -> list[tuple[float, int]]:
    now, out = 1_000.0, []
    for gap, units in gaps:
        now += gap
        out.append((now, min(units, cap)))
    return out


@settings(max_examples=150, deadline=None)
@given(
    images=st.integers(min_value=0, max_value=400),
    requests=st.integers(min_value=0, max_value=400),
    gaps=arrivals,
    seed=st.integers(0, 2**32),
)
def test_no_window_holds_more_than_either_limit(
    images: int, requests: int, gaps: list[tuple[float, int]], seed: int
) -> None:
    pace = Pace(images, requests)
    if not pace:
        return
    cap = _burst(images) if images else 10  # requests larger than the burst: the next test
    calls = schedule(pace, as_times(gaps, cap), seed)
    if images:
        assert busiest_window(calls) <= images, f"{images} images a minute: {busiest_window(calls)} (seed {seed})"
    if requests:
        one_each = [(at, 1) for at, _ in calls]
        assert busiest_window(one_each) <= requests, f"{requests} requests a minute (seed {seed})"


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(min_value=1, max_value=400), gaps=arrivals, seed=st.integers(0, 2**32))
def test_a_request_larger_than_the_burst_overshoots_by_its_excess_at_most(
    limit: int, gaps: list[tuple[float, int]], seed: int
) -> None:
    pace = Pace(limit)
    times = as_times(gaps, 10)
    largest = max(units for _, units in times)
    busiest = busiest_window(schedule(pace, times, seed))
    assert busiest <= limit + max(0, largest - _burst(limit)), (limit, largest, busiest, seed)


def test_a_backlog_uses_over_nine_tenths_of_the_limit() -> None:
    # 120 one-image jobs asking at once against 60 a minute: turns come at 94% of the limit's rate
    pace = Pace(60)
    tat, turns = 0.0, []
    for _ in range(120):
        at = pace.turn(tat, 0.0, 1)
        tat = pace.after(tat, at, 1)
        turns.append(at)
    rate_per_minute = (len(turns) - _burst(60)) / (turns[-1] - turns[0]) * 60
    assert rate_per_minute / 60 >= 0.9, rate_per_minute


def test_the_first_requests_go_at_once_up_to_the_burst() -> None:
    pace = Pace(100)
    assert _burst(100) == 3
    tat = 0.0
    turns = []
    for _ in range(4):
        at = pace.turn(tat, 50.0, 1)
        tat = pace.after(tat, at, 1)
        turns.append(at)
    assert turns[:3] == [50.0, 50.0, 50.0] and turns[3] > 50.0


def test_limits_are_read_per_route_or_for_every_route() -> None:
    assert parse_per_minute("") == {}
    assert parse_per_minute("60") == {"*": 60}
    assert parse_per_minute("openai=250, wavespeed=60,bad=x,zero=0") == {"openai": 250, "wavespeed": 60}


def test_only_plausible_announced_limits_are_kept() -> None:
    headers = {"x-ratelimit-limit-images": "60", "x-ratelimit-limit-requests": "-1"}
    assert announced_limits(headers) == {"images": 60}
    assert announced_limits({"x-ratelimit-limit-requests": "1e9"}) == {}
