"""Fixtures for tests that drive the module stack's worker by hand."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from darkroom import aws
from darkroom_local.stack import LocalStack
from tests.pipeline import queue_url
from tests.support import drain


@pytest.fixture
def calm_provider(stack: LocalStack) -> Iterator[None]:
    """An emulator with no faults or latency and no counted generations, and an empty jobs queue, before and after."""
    emulator = stack.emulator
    assert emulator is not None

    def calm() -> None:
        emulator.config.fault_rate = 0.0
        emulator.config.latency_ms = 0
        emulator.stats.generations.clear()

    calm()
    drain(queue_url(stack))
    yield
    calm()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Change the functions' environment for one test, as a template parameter would."""

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        aws.reset()

    yield set_env
    monkeypatch.undo()
    aws.reset()
