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


def start_run(
    port: int, cwd: Path | None = None, arguments: tuple[str, ...] = (), **env: str
) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "DARKROOM_PORT": str(port),
        "DARKROOM_AWS_PORT": str(free_port()),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        **env,
    }
    process = subprocess.Popen(
        [*darkroom_command(), "run", *arguments],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
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
    # Given template parameters overridden in both of sam deploy's syntaxes
    arguments = ("--parameter-overrides", "ModerationMode=prompt", "ParameterKey=OutputRetentionDays,ParameterValue=3")
    process, output = start_run(port, tmp_path, arguments, DARKROOM_API_KEY="dr_e2e_fixed_key")
    try:
        assert f"API        http://127.0.0.1:{port}" in output, output
        assert "export DARKROOM_API_KEY=dr_e2e_fixed_key" in output
        assert re.search(r"second tenant.*dr_", output)
        assert "parameters ModerationMode=prompt OutputRetentionDays=3" in output

        # A second `darkroom run` on the same port says so in one line, and exits at once
        started = time.monotonic()
        second = subprocess.run(
            [*darkroom_command(), "run", "--port", str(port)], capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1 and time.monotonic() - started < 10
        assert second.stdout == "" and second.stderr.count("\n") == 1, second.stderr
        assert f"port {port} is already in use" in second.stderr

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
        # The override took effect: the moderation pre-check refuses a flagged prompt
        flagged = httpx.post(
            f"http://127.0.0.1:{port}/v1/images/generations",
            headers={**headers, "Prefer": "wait=20"},
            json={"prompt": "[flag] something"},
            timeout=30,
        )
        assert flagged.status_code == 400 and flagged.json()["error"]["code"] == "moderation_flagged"

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


@pytest.mark.parametrize(
    ("arguments", "environment", "said"),
    [
        (("--parameter-overrides", "NoSuchParameter=1"), "", "no parameter(s) ['NoSuchParameter']"),
        (("--parameter-overrides", "ProviderTimeoutSeconds"), "", "expected Name=Value"),
        ((), "ProviderTimeoutSeconds=5", "ProviderTimeoutSeconds must be one of 60"),
    ],
)
def test_a_refused_parameter_is_one_line_and_exit_2(arguments: tuple[str, ...], environment: str, said: str) -> None:
    env = {**os.environ, "DARKROOM_PARAMETER_OVERRIDES": environment}
    command = [*darkroom_command(), "run", *arguments]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and said in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
