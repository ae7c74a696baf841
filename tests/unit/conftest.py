"""Fixtures the unit tests of the emulator share: one emulator per module, and a client of it with its counts reset."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from darkroom_local.emulator import Emulator, EmulatorConfig


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """The emulator with its defaults, on a free port (a module may define its own, configured otherwise)."""
    running = Emulator(EmulatorConfig())
    running.start("127.0.0.1", 0)
    yield running
    running.stop()


@pytest.fixture
def client(emulator: Emulator) -> Iterator[httpx.Client]:
    emulator.reset()
    with httpx.Client(base_url=emulator.url, headers={"Authorization": "Bearer sk-test"}, timeout=30) as http:
        yield http
