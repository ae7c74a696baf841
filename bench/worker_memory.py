"""Peak memory of the worker handling one job, as a share of the memory the template gives it, measured in one run.

For each request: a fresh interpreter loads the worker handler and handles one job against the local stack (moto's
server and the emulator, started here, drawing noise so that images do not compress: as large as a real provider's
photographs at worst), then reports its peak resident set size. The baseline is a fresh interpreter that loads the
handler and handles a job that ends before any provider call (a canceled one), shown beside each figure so the job's
own cost can be read off. The requests: 1024x1024 n=1, 2048x2048 n=4, and the largest request the catalog allows
(read from darkroom.catalog: the most images, the most pixels, four channels where a model offers transparency, as
PNG, lossless), which is what the worker's MemorySize must hold. MemorySize is the worker's own in template.yaml, or
the Globals' when it sets none.

Goal: every peak within 75% of the worker's MemorySize.
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
sys.path[:0] = [str(REPO / "layers" / "darkroom"), str(REPO / "local"), str(REPO), str(REPO / "bench")]

from table import Row, print_table, remember  # noqa: E402

from darkroom import catalog  # noqa: E402
from darkroom.jobs.store import JobStore  # noqa: E402
from darkroom_local.emulator import EmulatorConfig  # noqa: E402
from darkroom_local.stack import LocalStack, StackConfig  # noqa: E402
from lambda_child import invocation, run, write_event  # noqa: E402
from tests.support import http_event, load_event  # noqa: E402

GOAL_SHARE = 0.75
CASES = {
    "1024x1024 png n=1": {"size": "1024x1024", "n": 1},
    "2048x2048 png n=4": {"size": "2048x2048", "n": 4},
}


def largest_request() -> tuple[str, dict[str, Any]]:
    """The request with the largest answer the catalog allows: custom sizes at the most pixels, the most images, and
    a transparent background (four channels) on a model that offers it, as PNG (lossless: noise does not shrink)."""
    model = max(
        catalog.describe_models(),
        key=lambda m: (m["custom_sizes"] is not None, "transparent" in m["backgrounds"]),  # type: ignore[operator]
    )
    sizes: Any = model["custom_sizes"]
    width = sizes["max_edge"]
    height = sizes["max_pixels"] // width // sizes["multiple_of"] * sizes["multiple_of"]
    transparent = "transparent" in model["backgrounds"]  # type: ignore[operator]
    body = {
        "model": model["id"],
        "size": f"{width}x{height}",
        "n": model["max_n"],
        "output_format": "png",
        "background": "transparent" if transparent else "opaque",
    }
    return f"largest: {model['id']} {width}x{height} {body['background']} png n={model['max_n']}", body


def worker_memory_mb(stack: LocalStack) -> int:
    """The worker's MemorySize in template.yaml, or the Globals' when the worker does not set its own."""
    globals_ = stack.template.doc.get("Globals", {}).get("Function", {})
    properties = stack.template.resources["WorkerFunction"]["Properties"]
    return int(stack.template.resolve(properties.get("MemorySize", globals_.get("MemorySize", 128))))


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


def measure() -> dict[str, Any]:
    """{"memory_mb", "baseline_mib", "peaks": {request: {"peak_mib", "images_mib"}}}, the largest request last."""
    config = StackConfig(
        serve=False, environment={"POWERTOOLS_LOG_LEVEL": "WARNING"}, emulator=EmulatorConfig(texture="noise")
    )
    with LocalStack(config) as stack, tempfile.TemporaryDirectory() as scratch:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        baseline = peak_mib(job_event(stack, {}, cancel=True), Path(scratch), env)
        peaks = {}
        for name, body in [*CASES.items(), largest_request()]:
            event = job_event(stack, body)
            peak = peak_mib(event, Path(scratch), env)
            job = JobStore().get(json.loads(event["Records"][0]["body"])["job_id"])
            assert job is not None and job.status == "succeeded", job
            peaks[name] = {"peak_mib": peak, "images_mib": sum(output["bytes"] for output in job.outputs) / 2**20}
        return {"memory_mb": worker_memory_mb(stack), "baseline_mib": baseline, "peaks": peaks}


def rows() -> list[Row]:
    measured = measure()
    remember("worker_memory", measured)  # memory_sizes.py, later in the same suite run, checks sizes against it
    memory_mb, baseline = measured["memory_mb"], measured["baseline_mib"]
    # Lambda's "MB" of memory are MiB (128 MB is 134,217,728 bytes), so peaks in MiB compare directly.
    return [
        Row(
            f"worker peak RSS, {name} ({peak['images_mib']:.0f} MiB of images)",
            f"{peak['peak_mib']:.0f} MiB = {peak['peak_mib'] / memory_mb:.0%} of {memory_mb} MB"
            f" (baseline {baseline:.0f})",
            f"<= {GOAL_SHARE:.0%}",
            peak["peak_mib"] <= GOAL_SHARE * memory_mb,
        )
        for name, peak in measured["peaks"].items()
    ]


def main() -> int:
    table = rows()
    print_table(table, "worker peak RSS, one fresh interpreter per job, against the worker's MemorySize")
    return 0 if all(row.ok for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
