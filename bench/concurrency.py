"""Concurrency: 50 jobs submitted at once against a provider that takes 2 s each, through the served local stack.

The worker may run as many invocations as there are jobs (WorkerMaxConcurrency 50, its default being 5 to keep within
a provider's images-per-minute limit). Measured: from the last submission to the last job's end, as a ratio to the
provider's own 2 s, with every job read every 50 ms until it ends. Goal: every job succeeds, within 1.5x of 2 s after
the last submit.
Usage: python bench/concurrency.py [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"  # before darkroom's logger is made on import
os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"  # the functions run in this process: keep their metrics quiet
sys.path[:0] = [str(REPO / "layers" / "darkroom"), str(REPO / "local"), str(REPO), str(REPO / "bench")]

from table import Row, print_table  # noqa: E402

from darkroom_local.emulator import EmulatorConfig  # noqa: E402
from tests.e2e.served import api_client, served_stack  # noqa: E402

LATENCY_S = 2.0
GOAL_RATIO = 1.5
ENDED = ("succeeded", "failed", "canceled")


def rows(jobs: int = 50) -> list[Row]:
    body = {"model": "gpt-image-2", "prompt": "a crowd of lighthouses", "size": "1024x1024", "quality": "low"}
    capacity = {"WorkerMaxConcurrency": str(jobs), "WorkerReservedConcurrency": str(jobs + 2)}
    emulator = EmulatorConfig(latency_ms=int(LATENCY_S * 1000))
    with served_stack(parameters=capacity, emulator=emulator) as stack, api_client(stack) as http:
        with ThreadPoolExecutor(max_workers=10) as pool:
            ids = list(pool.map(lambda _: http.post("/v1/images/generations", json=body).json()["id"], range(jobs)))
        last_submit = time.perf_counter()
        statuses: dict[str, str] = {}
        while len(statuses) < jobs and time.perf_counter() - last_submit < 120:
            for job_id in ids:
                if job_id not in statuses:
                    status = http.get(f"/v1/jobs/{job_id}").json()["status"]
                    if status in ENDED:
                        statuses[job_id] = status
            time.sleep(0.05)
        took = time.perf_counter() - last_submit
    succeeded = sum(1 for status in statuses.values() if status == "succeeded")
    ratio = took / LATENCY_S
    return [
        Row(
            f"concurrency: {jobs} jobs at {LATENCY_S:.0f} s latency, last submit to last end",
            f"{ratio:.2f}x ({took:.1f} s), {succeeded}/{jobs} succeeded",
            f"<= {GOAL_RATIO}x, all succeed",
            ratio <= GOAL_RATIO and succeeded == jobs,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    table = rows(args.jobs)
    print_table(table, "concurrency through the local stack")
    return 0 if all(row.ok for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
