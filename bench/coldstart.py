"""Cold-start cost of each handler, as a ratio to a boto3-only interpreter, measured in one run.

For each handler: a fresh interpreter imports it and handles one sample event against the local stack (moto's
server and the emulator, started here). The baseline is a fresh interpreter that imports boto3 and creates the same
boto3 clients the handler creates. Both are timed from spawn to exit, alternated, and the medians compared, so the
machine's speed cancels out. Moving an import into the first call does not change the figure; not importing what
is not needed does.

Targets: api at most 1.5x, worker at most 2.0x. Exits 1 if a target is missed.
Usage: python bench/coldstart.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "layers" / "darkroom"), str(REPO / "local"), str(REPO)]

from darkroom_local.stack import LocalStack, StackConfig  # noqa: E402
from lambda_child import invocation, run, write_event  # noqa: E402
from tests.support import http_event, load_event  # noqa: E402

TARGETS = {"api": 1.5, "worker": 2.0}
# The boto3 clients each handler builds while handling its sample event.
CLIENTS = {"api": ("dynamodb", "sqs"), "worker": ("dynamodb", "secretsmanager", "s3")}

CHECK_CLIENTS = """
from darkroom import aws
assert aws.client.cache_info().currsize == {clients}, "the handler built other clients than the baseline"
print(json.dumps(result)[:200])
"""

BASELINE = """
import boto3
clients = [boto3.client(name) for name in {services!r}]
"""


def timed(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    run(code, env)
    return time.perf_counter() - started


def api_event(stack: LocalStack) -> dict[str, Any]:
    event = load_event("api_create_generation")
    event["headers"]["authorization"] = f"Bearer {stack.api_keys['dev']}"
    return event


def worker_event(stack: LocalStack) -> dict[str, Any]:
    answer = stack.functions["ApiFunction"].invoke(
        http_event(
            "POST",
            "/v1/images/generations",
            api_key=stack.api_keys["dev"],
            body={"prompt": "bench", "quality": "low", "size": "1024x1024"},
        )
    )
    job_id = json.loads(answer["body"])["id"]
    event = load_event("worker_jobs_queue")
    event["Records"][0]["body"] = json.dumps({"job_id": job_id, "tenant": "dev"})
    event["Records"][0]["eventSourceARN"] = stack.template.attributes["JobsQueue"]["Arn"]
    return event


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    config = StackConfig(serve=False, environment={"POWERTOOLS_LOG_LEVEL": "WARNING"})
    missed = []
    with LocalStack(config) as stack, tempfile.TemporaryDirectory() as scratch:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        makers = {"api": api_event, "worker": worker_event}
        print(f"cold start, median of {args.runs} fresh interpreters each (Python {sys.version.split()[0]})")
        for name, make_event in makers.items():
            handler_times, baseline_times = [], []
            for attempt in range(args.runs):
                event_file = write_event(make_event(stack), Path(scratch) / f"{name}-{attempt}.json")
                code = invocation(name, event_file, CHECK_CLIENTS.format(clients=len(CLIENTS[name])))
                handler_times.append(timed(code, env))
                baseline_times.append(timed(BASELINE.format(services=CLIENTS[name]), env))
            handler, baseline = statistics.median(handler_times), statistics.median(baseline_times)
            ratio = handler / baseline
            verdict = "ok" if ratio <= TARGETS[name] else "OVER TARGET"
            print(
                f"  {name:<7} {handler * 1000:6.0f} ms vs boto3 + {'/'.join(CLIENTS[name])} "
                f"{baseline * 1000:6.0f} ms = {ratio:.2f}x (target <= {TARGETS[name]}x) {verdict}"
            )
            if ratio > TARGETS[name]:
                missed.append(name)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
