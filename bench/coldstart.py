"""Cold starts: every handler as a ratio to a boto3-only interpreter, and what shipped bytecode saves, in one run.

For each handler: a fresh interpreter imports it and handles one sample event against the local stack (moto's
server and the emulator, started here), with the darkroom package compiled to bytecode as `make build` ships it.
The baseline is a fresh interpreter that imports boto3 and creates the same boto3 clients the handler created (seen
in a first, untimed run). Both are timed from spawn to exit, alternated, and the medians compared, so the machine's
speed cancels out. Neither may write bytecode, as on Lambda's read-only file system. Moving an import into the
first call does not change the figure; not importing what is not needed does.

Bytecode: the api handler's cold start with the darkroom package as source only (what Lambda compiles again at every
cold start when nothing is shipped) against the same package compiled.

Goals: api at most 1.3x, worker at most 1.6x, every other handler at most 1.5x; compiled faster than source.
Usage: python bench/coldstart.py [--runs N]
"""

from __future__ import annotations

import argparse
import compileall
import io
import json
import os
import py_compile
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "layers" / "darkroom"), str(REPO / "local"), str(REPO), str(REPO / "bench")]

import boto3  # noqa: E402
from PIL import Image  # noqa: E402
from table import Row, print_table  # noqa: E402

from darkroom_local.pollers import sqs_record  # noqa: E402
from darkroom_local.schedules import scheduled_event  # noqa: E402
from darkroom_local.stack import LocalStack, StackConfig  # noqa: E402
from lambda_child import invocation, run, write_event  # noqa: E402
from tests.support import http_event, load_event  # noqa: E402

GOALS = {"api": 1.3, "worker": 1.6}
OTHER_GOAL = 1.5

# Records every boto3 client the handler builds, so the baseline builds the same.
RECORD_CLIENTS = """
from darkroom import aws as _aws
_made = []
_client = _aws.client
def _recording(service):
    if service not in _made:
        _made.append(service)
    return _client(service)
_aws.client = _recording
"""
PRINT_CLIENTS = "\nprint(json.dumps(_made))\n"
BASELINE = """
import boto3
clients = [boto3.client(name) for name in {services!r}]
"""


# Every timed handler must have done its work: a handler that failed the record (a worker's `batchItemFailures`) or
# answered an error would look faster than a healthy one.
SUCCEEDED = """
assert not (isinstance(result, dict) and result.get("batchItemFailures")), result
assert not (isinstance(result, dict) and not 200 <= int(result.get("statusCode", 200)) < 300), result
"""


def timed(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    run(code, env)
    return time.perf_counter() - started


def submitted(stack: LocalStack, **body: Any) -> str:
    answer = stack.functions["ApiFunction"].invoke(
        http_event(
            "POST",
            "/v1/images/generations",
            api_key=stack.api_keys["dev"],
            body={"prompt": "bench", "quality": "low", "size": "1024x1024", **body},
        )
    )
    return str(json.loads(answer["body"])["id"])


def job_message(stack: LocalStack, job_id: str) -> dict[str, Any]:
    event = load_event("worker_jobs_queue")
    event["Records"][0]["body"] = json.dumps({"job_id": job_id, "tenant": "dev"})
    event["Records"][0]["eventSourceARN"] = stack.template.attributes["JobsQueue"]["Arn"]
    return event


def s3_record(stack: LocalStack, queue: str, key: str) -> dict[str, Any]:
    body = json.dumps({"Records": [{"s3": {"object": {"key": key}}}]})
    message = {"MessageId": "bench", "ReceiptHandle": "bench", "Body": body}
    return {"Records": [sqs_record(message, stack.template.attributes[queue]["Arn"])]}


def api_event(stack: LocalStack) -> dict[str, Any]:
    event = load_event("api_create_generation")
    event["headers"]["authorization"] = f"Bearer {stack.api_keys['dev']}"
    return event


def worker_event(stack: LocalStack) -> dict[str, Any]:
    return job_message(stack, submitted(stack))


def notify_event(stack: LocalStack) -> dict[str, Any]:
    """The completion of a job that has just ended: its manifest's S3 event, through the completions queue."""
    job_id = submitted(stack)
    stack.functions["WorkerFunction"].invoke(job_message(stack, job_id))
    return s3_record(stack, "CompletionsQueue", f"outputs/dev/{job_id}/result.json")


def poller_event(stack: LocalStack) -> dict[str, Any]:
    """One poll of a job WaveSpeed has taken."""
    job_id = submitted(stack, provider="wavespeed")
    stack.functions["WorkerFunction"].invoke(job_message(stack, job_id))
    return {"action": "poll", "job_id": job_id, "poll": {"done": False, "wait_s": 1, "polls": 0, "failed_polls": 0}}


def uploads_event(stack: LocalStack) -> dict[str, Any]:
    """An upload job's one image landing: the function judges it with Pillow and queues the edit."""
    opened = stack.functions["ApiFunction"].invoke(
        http_event("POST", "/v1/uploads", api_key=stack.api_keys["dev"], body={"prompt": "bench", "quality": "low"})
    )
    assert opened["statusCode"] == 201, opened["body"]
    (post,) = json.loads(opened["body"])["uploads"]
    image = io.BytesIO()
    Image.new("RGB", (256, 256), (40, 120, 200)).save(image, "PNG")
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    key = post["fields"]["key"]
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=image.getvalue(), ContentType="image/png")
    return s3_record(stack, "UploadsQueue", key)


def scheduled(_: LocalStack) -> dict[str, Any]:
    return scheduled_event("bench")


EVENTS: dict[str, tuple[str, Callable[[LocalStack], dict[str, Any]]]] = {
    "api": ("api", api_event),
    "worker": ("worker", worker_event),
    "notify": ("notify", notify_event),
    "poller": ("poller", poller_event),
    "sweeper": ("sweeper", scheduled),
    "uploads": ("uploads", uploads_event),
    "batches": ("batches", scheduled),
}


def layer_copies(scratch: Path) -> tuple[Path, Path]:
    """The darkroom package twice: as source only, and compiled as `make build` compiles it."""
    source, compiled = scratch / "source", scratch / "compiled"
    for target in (source, compiled):
        shutil.copytree(REPO / "layers" / "darkroom" / "darkroom", target / "darkroom", ignore=_no_bytecode)
    compileall.compile_dir(
        compiled, quiet=1, force=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )
    return source, compiled


def _no_bytecode(_: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__"]


def rows(runs: int = 9) -> list[Row]:
    config = StackConfig(serve=False, environment={"POWERTOOLS_LOG_LEVEL": "WARNING"})
    table: list[Row] = []
    with LocalStack(config) as stack, tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        source, compiled = layer_copies(scratch)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # Lambda's file system is read-only
        for name, (function, make_event) in EVENTS.items():
            first = write_event(make_event(stack), scratch / f"{name}-first.json")
            services = json.loads(
                run(invocation(function, first, SUCCEEDED + PRINT_CLIENTS, layer=compiled, before=RECORD_CLIENTS), env)
                .strip()
                .splitlines()[-1]
            )
            handler_times, baseline_times = [], []
            for attempt in range(runs):
                event_file = write_event(make_event(stack), scratch / f"{name}-{attempt}.json")
                handler_times.append(timed(invocation(function, event_file, SUCCEEDED, layer=compiled), env))
                baseline_times.append(timed(BASELINE.format(services=services), env))
            handler, baseline = statistics.median(handler_times), statistics.median(baseline_times)
            goal = GOALS.get(name, OTHER_GOAL)
            table.append(
                Row(
                    f"cold start {name} (vs boto3 + {'/'.join(services) or 'no client'})",
                    f"{handler / baseline:.2f}x ({handler * 1000:.0f} vs {baseline * 1000:.0f} ms)",
                    f"<= {goal}x",
                    handler / baseline <= goal,
                )
            )
        from_source, from_bytecode = [], []
        for attempt in range(runs):
            event_file = write_event(api_event(stack), scratch / f"bytecode-{attempt}.json")
            from_source.append(timed(invocation("api", event_file, SUCCEEDED, layer=source), env))
            from_bytecode.append(timed(invocation("api", event_file, SUCCEEDED, layer=compiled), env))
        ratio = statistics.median(from_source) / statistics.median(from_bytecode)
        table.append(
            Row(
                "cold start api, darkroom as source / as shipped bytecode",
                f"{ratio:.2f}x ({statistics.median(from_source) * 1000:.0f} vs "
                f"{statistics.median(from_bytecode) * 1000:.0f} ms)",
                "> 1.0x",
                ratio > 1.0,
            )
        )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    table = rows(args.runs)
    print_table(table, f"cold starts, median of {args.runs} fresh interpreters each (Python {sys.version.split()[0]})")
    return 0 if all(row.ok for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
