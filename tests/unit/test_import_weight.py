"""Cold starts: importing a handler builds no clients and pulls in nothing it does not need."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Only the batches function calls OpenAI's Batch API, or follows batches.
BATCH_TIER = {"darkroom.providers.batches", "darkroom.batches.batcher", "darkroom.batches.follow"}
HEAVY_FOR_API = {"httpx", "PIL", "openai", "aws_xray_sdk", "aws_lambda_powertools.event_handler", "moto", *BATCH_TIER}
# powertools' batch utilities cost some 60 ms of imports: darkroom.sqs_batches answers partial batches itself.
HEAVY_FOR_WORKER = {
    "openai",
    "aws_xray_sdk",
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.utilities.batch",
    "moto",
    *BATCH_TIER,
}


def modules_after_import(function: str, then: str = "") -> set[str]:
    """What importing a function's handler loads (and then `then`, a module its handler imports when it runs)."""
    code = f"""
import importlib, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("app", {str(REPO / "functions" / function / "app.py")!r})
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
if {then!r}: importlib.import_module({then!r})
import boto3
print(json.dumps({{"modules": sorted(sys.modules), "sessions": boto3.DEFAULT_SESSION is not None}}))
"""
    env = {"PYTHONPATH": str(REPO / "layers" / "darkroom"), "AWS_DEFAULT_REGION": "us-east-1", "PATH": ""}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["sessions"] is False, "a boto3 client was built at import time"
    return set(data["modules"])


# The sweeper recovers jobs without calling a provider; the poller imports the adapters when it polls.
HEAVY_FOR_SWEEPER = {"httpx", "PIL", "openai", "aws_lambda_powertools.utilities.batch", *BATCH_TIER}


@pytest.mark.parametrize(
    ("function", "heavy"),
    [
        ("api", HEAVY_FOR_API),
        ("worker", HEAVY_FOR_WORKER),
        ("sweeper", HEAVY_FOR_SWEEPER),
        ("poller", HEAVY_FOR_SWEEPER),
        ("batches", HEAVY_FOR_SWEEPER),  # its scheduled runs, most of which find nothing to send
    ],
)
def test_handler_import_stays_light(function: str, heavy: set[str]) -> None:
    loaded = modules_after_import(function)
    assert not {name for name in loaded if name in heavy}


def test_the_batchers_idle_runs_stay_light() -> None:
    # Its handler imports the batcher when it runs, every minute, and most runs find nothing to send
    loaded = modules_after_import("batches", then="darkroom.batches.batcher")
    assert "darkroom.batches.batcher" in loaded
    assert not loaded & {"httpx", "PIL", "openai", "darkroom.providers.batches", "darkroom.batches.follow"}
