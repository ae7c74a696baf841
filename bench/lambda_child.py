"""One handler invocation in a fresh interpreter, as a Lambda cold start runs it: what both benchmarks time or
measure, so they run the same thing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_INVOKE = """
import importlib.util, json, sys
sys.path.insert(0, {layer!r})
event = json.load(open({event_file!r}))
class Context:
    function_name = "bench"; memory_limit_in_mb = 1024; invoked_function_arn = "arn:aws:lambda:us-east-1:1:function:b"
    aws_request_id = "bench"
    def get_remaining_time_in_millis(self): return 600000  # the template's worker timeout
spec = importlib.util.spec_from_file_location("app", {app!r})
app = importlib.util.module_from_spec(spec); spec.loader.exec_module(app)
result = app.lambda_handler(event, Context())
"""


def invocation(function: str, event_file: Path, then: str, *, layer: Path | None = None, before: str = "") -> str:
    """A script that loads functions/<function>/app.py (with the darkroom package from `layer`, the repository's by
    default), runs `before`, handles the event in `event_file` into `result`, then runs `then` (checks, and what to
    print)."""
    app = REPO / "functions" / function / "app.py"
    script = _INVOKE.format(layer=str(layer or REPO / "layers" / "darkroom"), event_file=str(event_file), app=str(app))
    head, marker, tail = script.partition("spec = importlib.util")
    return head + before + marker + tail + then


def run(code: str, env: dict[str, str]) -> str:
    """Run `code` in a fresh interpreter; its standard output, or exit the benchmark with its error."""
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"bench subprocess failed:\n{result.stderr[-2000:]}")
    return result.stdout


def write_event(event: dict[str, object], path: Path) -> Path:
    path.write_text(json.dumps(event))
    return path
