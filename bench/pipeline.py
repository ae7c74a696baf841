"""Pipeline overhead: how much longer a job takes through darkroom than a direct call to the same provider.

The whole local stack serves HTTP (its API front, moto's server, SQS pollers feeding the worker, the emulator at zero
latency). A job's time is from just before its submission to the first read that finds it succeeded, the job read
every 10 ms; a direct call is the official openai SDK's `images.generate` against the same emulator. Jobs and direct
calls alternate, and the overhead is each job's time minus the median direct call, so the machine's speed cancels
out of what is compared.

Goals: p50 at most 100 ms, p95 at most 200 ms over 30 jobs.
Usage: python bench/pipeline.py [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"  # before darkroom's logger is made on import
os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"  # the functions run in this process: keep their metrics quiet
sys.path[:0] = [str(REPO / "layers" / "darkroom"), str(REPO / "local"), str(REPO), str(REPO / "bench")]

from table import Row, print_table  # noqa: E402

from tests.e2e.served import api_client, served_stack  # noqa: E402

GOAL_P50_MS, GOAL_P95_MS = 100, 200
BODY = {"model": "gpt-image-2", "prompt": "a lighthouse", "size": "1024x1024", "quality": "low"}


def rows(jobs: int = 30) -> list[Row]:
    import openai

    through, direct = [], []
    with served_stack() as stack, api_client(stack) as http:
        assert stack.emulator is not None
        key = stack.emulator.config.api_key or "sk-bench"  # the key the stack gave its emulator
        sdk = openai.OpenAI(base_url=f"{stack.emulator.url}/v1", api_key=key, max_retries=0)
        sdk.images.generate(model="gpt-image-2", prompt="a lighthouse", size="1024x1024", quality="low")  # warm
        http.post("/v1/images/generations", json=BODY)
        for _ in range(jobs):
            started = time.perf_counter()
            sdk.images.generate(model="gpt-image-2", prompt="a lighthouse", size="1024x1024", quality="low")
            direct.append(time.perf_counter() - started)
            started = time.perf_counter()
            job = http.post("/v1/images/generations", json=BODY).json()
            while http.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("succeeded", "failed", "canceled"):
                time.sleep(0.01)
            through.append(time.perf_counter() - started)
    baseline = statistics.median(direct)
    overhead = sorted((t - baseline) * 1000 for t in through)
    p50, p95 = statistics.median(overhead), overhead[max(0, round(0.95 * len(overhead)) - 1)]
    return [
        Row(
            f"pipeline overhead p50 ({jobs} jobs, direct call {baseline * 1000:.0f} ms)",
            f"{p50:.0f} ms",
            f"<= {GOAL_P50_MS} ms",
            p50 <= GOAL_P50_MS,
        ),
        Row(f"pipeline overhead p95 ({jobs} jobs)", f"{p95:.0f} ms", f"<= {GOAL_P95_MS} ms", p95 <= GOAL_P95_MS),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    args = parser.parse_args()
    table = rows(args.jobs)
    print_table(table, "pipeline overhead through the local stack, against direct calls to the same emulator")
    return 0 if all(row.ok for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
