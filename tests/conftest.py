"""Fixtures: a darkroom stack on moto's server (integration), or the whole local stack serving HTTP (e2e)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from darkroom_local.emulator import EmulatorConfig
from darkroom_local.stack import LocalStack, StackConfig

QUIET = {"POWERTOOLS_LOG_LEVEL": "WARNING"}
# Short waits so retries and redeliveries happen within a test's patience.
FAST = {
    "RetryBaseDelaySeconds": "1",
    "JobsQueueVisibilitySeconds": "20",
    "WorkerTimeoutSeconds": "20",
    "ProviderTimeoutSeconds": "5",
    "AsyncFirstPollSeconds": "1",
    "PollMaxWaitSeconds": "1",
    "PollFailuresTolerated": "2",
    "BatchFirstPollSeconds": "1",
    "BatchMaxPollSeconds": "1",
}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What a test recorded as its `summary` (the fault runs' figures), shown whichever process ran it."""
    for outcome in ("passed", "failed"):
        for report in terminalreporter.getreports(outcome):
            for name, value in report.user_properties:
                if name == "summary":
                    terminalreporter.write_line(str(value))


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """AWS resources from template.yaml on moto's server, the functions loaded, the emulator up; nothing polling."""
    config = StackConfig(serve=False, parameters=dict(FAST), environment=dict(QUIET), emulator=EmulatorConfig())
    with LocalStack(config) as running:
        yield running
