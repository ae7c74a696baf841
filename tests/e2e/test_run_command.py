"""`darkroom run` as a newcomer starts it: it serves, prints the URL and key, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from darkroom_local.stack import free_port

pytestmark = pytest.mark.e2e


def darkroom_command() -> list[str]:
    script = Path(sys.executable).parent / "darkroom"
    return [str(script)] if script.exists() else [sys.executable, "-m", "darkroom_local.cli"]


def start_run(port: int, cwd: Path | None = None, **env: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "DARKROOM_PORT": str(port), "POWERTOOLS_LOG_LEVEL": "WARNING", **env}
    process = subprocess.Popen(
        [*darkroom_command(), "run"], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    output = ""
    deadline = time.monotonic() + 60
    while "Ctrl-C stops it." not in output and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output += line
    return process, output


def test_run_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process, output = start_run(port, tmp_path, DARKROOM_API_KEY="dr_e2e_fixed_key")
    try:
        assert f"API        http://127.0.0.1:{port}" in output, output
        assert "export DARKROOM_API_KEY=dr_e2e_fixed_key" in output
        assert re.search(r"second tenant.*dr_", output)

        headers = {"Authorization": "Bearer dr_e2e_fixed_key"}
        assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
        job = httpx.post(
            f"http://127.0.0.1:{port}/v1/images/generations",
            headers=headers,
            json={"prompt": "a quick one", "size": "1024x1024"},
        ).json()
        for _ in range(100):
            status = httpx.get(f"http://127.0.0.1:{port}/v1/jobs/{job['id']}", headers=headers).json()["status"]
            if status == "succeeded":
                break
            time.sleep(0.1)
        assert status == "succeeded"

        # An operator in another terminal manages the running stack's keys
        keys = [*darkroom_command(), "keys"]
        created = subprocess.run([*keys, "create", "--local", "--tenant", "ops"], cwd=tmp_path, capture_output=True)
        new_key = created.stdout.decode().strip()
        assert created.returncode == 0 and new_key.startswith("dr_"), created.stderr
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers={"Authorization": f"Bearer {new_key}"})
        assert answer.status_code == 200
        listed = subprocess.run([*keys, "list", "--local"], cwd=tmp_path, capture_output=True, text=True)
        assert listed.returncode == 0 and " ops " in listed.stdout and new_key not in listed.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "stopping darkroom" in rest
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    assert not (tmp_path / ".darkroom" / "local.json").exists()


def test_sigterm_with_a_provider_call_under_way_stops_promptly() -> None:
    port = free_port()
    process, output = start_run(port, DARKROOM_API_KEY="dr_e2e_slow", DARKROOM_EMULATOR_LATENCY_MS="120000")
    headers = {"Authorization": "Bearer dr_e2e_slow"}
    try:
        assert "Ctrl-C stops it." in output, output
        job = httpx.post(
            f"http://127.0.0.1:{port}/v1/images/generations", headers=headers, json={"prompt": "slow"}
        ).json()
        status = ""
        for _ in range(100):
            status = httpx.get(f"http://127.0.0.1:{port}/v1/jobs/{job['id']}", headers=headers).json()["status"]
            if status == "running":
                break
            time.sleep(0.1)
        assert status == "running"  # the provider call is under way (the emulator answers in two minutes)
        started = time.monotonic()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0
    assert time.monotonic() - started < 20
