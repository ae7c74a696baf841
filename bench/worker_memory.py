"""Peak memory of the worker handling one job, as a share of the memory the template gives it, measured in one run.

For each request size: a fresh interpreter loads the worker handler and handles one job against the local stack
(moto's server and the emulator, started here, drawing noise so that images do not compress: as large as a real
provider's photographs at worst), then reports its peak resident set size. The baseline is a fresh
interpreter that loads the handler and handles a job that ends before any provider call (a canceled one), so the
figure that matters, the job's own cost, is the difference. The largest request the catalog allows (n=10 at
3840x2160 transparent PNG on a 2.5 model) is what the worker's MemorySize must hold.

Goal: the largest request's peak within 75% of the template's worker MemorySize. Exits 1 if it is not.
Usage: python bench/worker_memory.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"  # before darkroom's logger is made on import
sys.path[:0] = [str(REPO / "layers" / "darkroom"), str(REPO / "local"), str(REPO)]

from darkroom.jobs.store import JobStore  # noqa: E402
from darkroom_local.emulator import EmulatorConfig  # noqa: E402
from darkroom_local.stack import LocalStack, StackConfig  # noqa: E402
from lambda_child import invocation, run, write_event  # noqa: E402
from tests.support import http_event, load_event  # noqa: E402

GOAL_SHARE = 0.75
CASES = {
    "1024x1024 png n=1": {"size": "1024x1024", "n": 1},
    "2048x2048 png n=4": {"size": "2048x2048", "n": 4},
    "3840x2160 png n=10": {"size": "3840x2160", "n": 10},
    # Four channels that do not compress: the largest answer any model in the catalog can give.
    "3840x2160 transparent n=10": {
        "size": "3840x2160",
        "n": 10,
        "model": "gpt-image-2.5-sunburst",
        "background": "transparent",
    },
}

# Peak RSS from VmHWM, the high-water mark of this process image alone. Not getrusage's ru_maxrss: Linux keeps that
# across fork and exec, so a child of a parent holding moto's objects would report the parent's size as its own.
REPORT_PEAK = """
assert result == {"batchItemFailures": []}, result
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"peak_mib": int(status["VmHWM"].split()[0]) / 1024}))
"""


def job_event(stack: LocalStack, body: dict[str, Any], *, cancel: bool = False) -> dict[str, Any]:
    key = stack.api_keys["dev"]
    answer = stack.functions["ApiFunction"].invoke(
        http_event("POST", "/v1/images/generations", api_key=key, body={"prompt": "memory bench", **body})
    )
    job_id = json.loads(answer["body"])["id"]
    if cancel:
        stack.functions["ApiFunction"].invoke(http_event("DELETE", f"/v1/jobs/{job_id}", api_key=key))
    event = load_event("worker_jobs_queue")
    event["Records"][0]["body"] = json.dumps({"job_id": job_id, "tenant": "dev", "attempt": 0})
    event["Records"][0]["eventSourceARN"] = stack.template.attributes["JobsQueue"]["Arn"]
    return event


def peak_mib(event: dict[str, Any], scratch: Path, env: dict[str, str]) -> float:
    code = invocation("worker", write_event(event, scratch / "event.json"), REPORT_PEAK)
    return float(json.loads(run(code, env).strip().splitlines()[-1])["peak_mib"])


def main() -> int:
    config = StackConfig(
        serve=False, environment={"POWERTOOLS_LOG_LEVEL": "WARNING"}, emulator=EmulatorConfig(texture="noise")
    )
    with LocalStack(config) as stack, tempfile.TemporaryDirectory() as scratch:
        memory_mb = int(stack.template.resources["WorkerFunction"]["Properties"]["MemorySize"])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        baseline = peak_mib(job_event(stack, {}, cancel=True), Path(scratch), env)
        print(f"worker peak RSS, one fresh interpreter per job; template MemorySize {memory_mb} MB")
        print(f"  {'request':<30} {'peak':>11}")
        print(f"  {'baseline (no provider call)':<30} {baseline:7.0f} MiB")
        largest = 0.0
        for name, body in CASES.items():
            event = job_event(stack, body)
            peak = peak_mib(event, Path(scratch), env)
            job = JobStore().get(json.loads(event["Records"][0]["body"])["job_id"])
            assert job is not None and job.status == "succeeded", job
            images_mib = sum(output["bytes"] for output in job.outputs) / 2**20
            largest = peak
            print(
                f"  {name:<30} {peak:7.0f} MiB  (+{peak - baseline:.0f} for {images_mib:.0f} MiB of images, "
                f"{images_mib * 4 / 3:.0f} MiB of answer) = {peak / memory_mb:.0%} of MemorySize"
            )
        ok = largest <= GOAL_SHARE * memory_mb
        print(
            f"largest request at {largest / memory_mb:.0%} of MemorySize"
            f" (goal <= {GOAL_SHARE:.0%}): {'ok' if ok else 'OVER'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
