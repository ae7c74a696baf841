"""What the end-to-end tests share: a served stack, a client of its API, and waiting for a job to end over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from darkroom_local.emulator import EmulatorConfig
from darkroom_local.stack import LocalStack, StackConfig
from tests.conftest import FAST, QUIET


@contextmanager
def served_stack(
    parameters: dict[str, str] | None = None,
    environment: dict[str, str] | None = None,
    emulator: EmulatorConfig | None = None,
    **config: Any,
) -> Iterator[LocalStack]:
    """The whole local stack serving HTTP on a free port, with short waits and quiet logs, plus what a test adds."""
    stack_config = StackConfig(
        port=0,
        parameters={**FAST, **(parameters or {})},
        environment={**QUIET, **(environment or {})},
        emulator=emulator or EmulatorConfig(),
        **config,
    )
    with LocalStack(stack_config) as stack:
        yield stack


@contextmanager
def api_client(stack: LocalStack, tenant: str = "dev") -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {stack.api_keys[tenant]}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as http:
        yield http


def wait_for_end(client: httpx.Client, job_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end within {timeout_s} s")
