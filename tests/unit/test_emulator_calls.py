"""`GET /_emulator/calls`: the provider's own count of what it was asked and what it billed, per prompt."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from darkroom_local.emulator import FAULT_KINDS, Emulator, EmulatorConfig

AUTH = {"Authorization": "Bearer sk-test"}
StartEmulator = Callable[..., Emulator]


@pytest.fixture
def start() -> Iterator[StartEmulator]:
    started: list[Emulator] = []

    def start_emulator(**config: Any) -> Emulator:
        emulator = Emulator(EmulatorConfig(**config))
        emulator.start("127.0.0.1", 0)
        started.append(emulator)
        return emulator

    yield start_emulator
    for emulator in started:
        emulator.stop()


def generate(
    emulator: Emulator, body: dict[str, Any], timeout: float = 30, headers: dict[str, str] | None = None
) -> httpx.Response:
    url = f"{emulator.url}/v1/images/generations"
    return httpx.post(url, json=body, headers={**AUTH, **(headers or {})}, timeout=timeout)


def calls_over_http(emulator: Emulator) -> dict[str, Any]:
    response = httpx.get(f"{emulator.url}/_emulator/calls", timeout=10)
    assert response.status_code == 200
    return dict(response.json())


def wait_for_generation(emulator: Emulator, prompt: str, within_s: float = 15) -> int:
    deadline = time.monotonic() + within_s
    while emulator.generations_for(prompt) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return emulator.generations_for(prompt)


def test_a_success_is_one_request_and_one_generation(start: StartEmulator) -> None:
    # Given a running emulator
    emulator = start()
    # When one request succeeds
    assert generate(emulator, {"prompt": "a cat", "quality": "low"}).status_code == 200
    # Then the provider's own count shows one request and one generation for that prompt
    expected = {
        "prompts": {"a cat": {"requests": 1, "generations": 1, "submissions": 0, "batched": 0, "edits": []}},
        "totals": {"requests": 1, "generations": 1, "submissions": 0, "batched": 0},
    }
    assert calls_over_http(emulator) == expected
    assert emulator.calls() == expected


def test_a_refused_request_is_counted_but_not_billed(start: StartEmulator) -> None:
    # Given a running emulator
    emulator = start()
    # When a request is refused for a DALL-E quality
    assert generate(emulator, {"prompt": "a dog", "quality": "hd"}).status_code == 400
    # Then it was received but generated nothing
    assert calls_over_http(emulator)["prompts"] == {
        "a dog": {"requests": 1, "generations": 0, "submissions": 0, "batched": 0, "edits": []}
    }


def test_a_client_that_gave_up_on_a_slow_answer_is_still_billed(start: StartEmulator) -> None:
    # Given a provider that takes two seconds to render
    emulator = start(latency_ms=2000)
    # When the client stops waiting after a fraction of that
    with pytest.raises(httpx.ReadTimeout):
        generate(emulator, {"prompt": "a slow fox", "quality": "low"}, timeout=0.3)
    # Then nothing is billed until the render finishes, and then it is, though nobody read the answer
    assert emulator.calls()["prompts"]["a slow fox"] == {
        "requests": 1,
        "generations": 0,
        "submissions": 0,
        "batched": 0,
        "edits": [],
    }
    assert wait_for_generation(emulator, "a slow fox") == 1
    assert calls_over_http(emulator)["totals"] == {"requests": 1, "generations": 1, "submissions": 0, "batched": 0}


def test_a_hang_generates_nothing(start: StartEmulator) -> None:
    # Given a provider whose every call hangs, then drops the connection
    emulator = start(fault_rate=1.0, fault_kinds=("hang",), hang_ms=300)
    # When a request is sent
    with pytest.raises(httpx.TransportError):
        generate(emulator, {"prompt": "a hung owl"}, timeout=5)
    # Then it was received, and nothing was generated
    assert calls_over_http(emulator)["prompts"] == {
        "a hung owl": {"requests": 1, "generations": 0, "submissions": 0, "batched": 0, "edits": []}
    }


def test_requests_for_the_same_prompt_add_up(start: StartEmulator) -> None:
    # Given a running emulator
    emulator = start()
    # When the same prompt is sent twice, once refused and once generated
    generate(emulator, {"prompt": "a cat", "style": "vivid"})
    generate(emulator, {"prompt": "a cat", "quality": "low"})
    # Then both requests and the one generation are counted under it
    assert emulator.calls()["prompts"]["a cat"] == {
        "requests": 2,
        "generations": 1,
        "submissions": 0,
        "batched": 0,
        "edits": [],
    }
    assert emulator.generations_for("a cat") == 1 and emulator.generations_for("another") == 0


def test_a_body_without_a_readable_prompt_counts_only_in_the_totals(start: StartEmulator) -> None:
    # Given a running emulator
    emulator = start()
    # When a body that is not JSON is sent
    response = httpx.post(f"{emulator.url}/v1/images/generations", content=b"{not json", headers=AUTH, timeout=10)
    # Then it is refused, and counted as a request of no prompt
    assert response.status_code == 400
    assert emulator.calls() == {
        "prompts": {},
        "totals": {"requests": 1, "generations": 0, "submissions": 0, "batched": 0},
    }


def test_stats_still_count_generations_per_darkroom_job(start: StartEmulator) -> None:
    # Given a running emulator
    emulator = start()
    # When darkroom's worker makes its first call for a job
    generate(emulator, {"prompt": "a cat", "quality": "low"}, headers={"X-Client-Request-Id": "job-1:0"})
    # Then the stats count that job's generation and the accepted call
    stats = httpx.get(f"{emulator.url}/_emulator/stats", timeout=10).json()
    assert stats["generations"] == {"job-1": 1} and stats["calls"] == 1


def test_reset_clears_calls_and_stats(start: StartEmulator) -> None:
    # Given an emulator that has generated once
    emulator = start()
    generate(emulator, {"prompt": "a cat", "quality": "low"})
    # When it is reset
    assert httpx.post(f"{emulator.url}/_emulator/reset", timeout=10).status_code == 200
    # Then both views start again from nothing
    assert calls_over_http(emulator) == {
        "prompts": {},
        "totals": {"requests": 0, "generations": 0, "submissions": 0, "batched": 0},
    }
    assert emulator.stats.as_dict() == {
        "calls": 0,
        "faults": {},
        "refusals": 0,
        "limited": 0,
        "moderations": 0,
        "moderations_flagged": 0,
        "generations": {},
    }


def test_every_fault_kind_appears_in_each_round_of_as_many_faults() -> None:
    # Given an emulator that faults every call / When it deals twelve faults
    emulator = Emulator(EmulatorConfig(fault_rate=1.0, seed=11))
    dealt = [emulator.pick_fault() for _ in range(12)]
    # Then each round of four holds every kind once: a run with four faults has seen them all
    rounds = [dealt[i : i + 4] for i in range(0, 12, 4)]
    assert all(sorted(r) == sorted(FAULT_KINDS) for r in rounds), dealt  # type: ignore[type-var]


def test_a_slow_fault_bills_the_render_the_client_gave_up_on(start: StartEmulator) -> None:
    # Given a provider whose every call is answered only after the client has given up
    emulator = start(fault_rate=1.0, fault_kinds=("slow",), hang_ms=5_000)
    # When a client waits half a second and leaves
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{emulator.url}/v1/images/generations",
            json={"prompt": "billed anyway", "quality": "low"},
            headers={"Authorization": "Bearer sk-test"},
            timeout=0.5,
        )
    # Then the provider generated, and bills, the image all the same
    assert wait_for_generation(emulator, "billed anyway") == 1
