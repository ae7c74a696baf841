"""The emulator's images-per-minute limit: a real refusal for darkroom's limiter to be measured against."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darkroom_local.emulator import Emulator, EmulatorConfig
from darkroom_local.rate_limit import ImagesPerMinute


@given(
    limit=st.integers(min_value=1, max_value=20),
    calls=st.lists(
        st.tuples(st.floats(min_value=0, max_value=5, allow_nan=False), st.integers(min_value=1, max_value=10)),
        max_size=60,
    ),
)
@settings(max_examples=200, deadline=None)
def test_no_window_ever_holds_more_than_the_limit(limit: int, calls: list[tuple[float, int]]) -> None:
    # Given calls at increasing times (gaps of up to 5 s) against a 10-second window
    window = ImagesPerMinute(limit, window_s=10.0)
    now, admitted = 0.0, []
    for gap, images in calls:
        now += gap
        wait = window.take(images, now=now)
        if wait is None:
            admitted.append((now, images))
        else:
            # Then a refusal says how long until the images would fit, and they do fit by then
            assert 0 < wait <= 10.0 + 1e-5
            if images <= limit:
                probe = ImagesPerMinute(limit, window_s=10.0)
                for at, count in admitted:
                    probe.take(count, now=at)
                assert probe.take(images, now=now + wait) is None
    # And no 10-second window of admitted calls holds more than the limit
    for start, _ in admitted:
        assert sum(count for at, count in admitted if start <= at < start + 10.0) <= limit


@pytest.fixture
def limited() -> Iterator[tuple[Emulator, httpx.Client]]:
    running = Emulator(EmulatorConfig(ipm=3))
    running.start("127.0.0.1", 0)
    with httpx.Client(base_url=running.url, headers={"Authorization": "Bearer sk-test"}, timeout=30) as http:
        yield running, http
    running.stop()


def test_past_its_images_per_minute_the_emulator_answers_429_and_generates_nothing(
    limited: tuple[Emulator, httpx.Client],
) -> None:
    emulator, client = limited
    # Given a key limited to 3 images a minute that has generated 2
    first = client.post("/v1/images/generations", json={"prompt": "two", "n": 2, "size": "1024x1024"})
    assert first.status_code == 200
    assert first.headers["x-ratelimit-remaining-images"] == "1"

    # When a call asks for 2 more
    refused = client.post("/v1/images/generations", json={"prompt": "two more", "n": 2, "size": "1024x1024"})

    # Then it is OpenAI's 429, saying when to come back, and nothing was generated or counted against the limit
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 59 <= float(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit-images"] == "3"
    stats = emulator.stats.as_dict()
    assert stats["limited"] == 1 and emulator.generations_for("two more") == 0
    # And one more image still fits
    assert client.post("/v1/images/generations", json={"prompt": "one", "size": "1024x1024"}).status_code == 200


def test_an_invalid_call_costs_no_quota(limited: tuple[Emulator, httpx.Client]) -> None:
    emulator, client = limited
    for _ in range(5):
        assert client.post("/v1/images/generations", json={"prompt": "bad", "size": "1000x1000"}).status_code == 400
    assert emulator.stats.as_dict()["limited"] == 0
    assert client.post("/v1/images/generations", json={"prompt": "ok", "n": 3}).status_code == 200


def test_wavespeed_submissions_share_the_limit(limited: tuple[Emulator, httpx.Client]) -> None:
    emulator, client = limited
    assert client.post("/v1/images/generations", json={"prompt": "three", "n": 3}).status_code == 200
    refused = client.post("/api/v3/openai/gpt-image-2/text-to-image", json={"prompt": "one more"})
    assert refused.status_code == 429 and refused.json()["code"] == 429
    assert "retry-after" in refused.headers and emulator.stats.as_dict()["limited"] == 1


def test_without_a_limit_nothing_is_refused() -> None:
    assert all(ImagesPerMinute(0).take(1000) is None for _ in range(10))
