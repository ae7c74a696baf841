"""The shared rate limit against a provider that enforces its own: 120 jobs through the local stack against the
emulator limited to 60 images per minute, measured in one run.

The emulator counts every image it admits and refuses the rest with OpenAI's 429 (DARKROOM_EMULATOR_IPM). darkroom
is told the same limit (ProviderImagesPerMinute) or, with --learn, only what the emulator's x-ratelimit headers
announce. Printed: how much of the limit the run used (images per minute between the first and the last call, as a
share of the limit), the most images the emulator admitted in any 60 s, and the share of provider calls answered
429. Goals: every job ends, at least 90% of the limit used, at most 2% of calls answered 429. Exits 1 if a goal is
missed.
Usage: python bench/traffic.py [--jobs 120] [--ipm 60] [--learn]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"  # before darkroom's logger is made on import
os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"  # the functions run in this process: keep their metrics quiet
sys.path[:0] = [str(REPO / "layers" / "darkroom"), str(REPO / "local"), str(REPO), str(REPO / "bench")]

from table import Row, print_table  # noqa: E402

from darkroom_local.emulator import EmulatorConfig  # noqa: E402
from tests.e2e.served import api_client, served_stack  # noqa: E402

GOAL_USED, GOAL_LIMITED = 0.90, 0.02
WINDOW_S = 60.0


def busiest_minute(admitted: list[tuple[float, int]]) -> int:
    return max(sum(n for at, n in admitted if end - WINDOW_S < at <= end) for end, _ in admitted)


def rows(jobs: int = 120, ipm: int = 60, learn: bool = False) -> list[Row]:
    parameters = {"ProviderImagesPerMinute": "" if learn else str(ipm), "WorkerMaxConcurrency": "10"}
    with (
        served_stack(parameters=parameters, emulator=EmulatorConfig(ipm=ipm)) as stack,
        api_client(stack) as client,
    ):
        started = time.monotonic()
        ids = []
        for index in range(jobs):
            answer = client.post("/v1/images/generations", json={"prompt": f"traffic {index}", "quality": "low"})
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        pending = set(ids)
        statuses: dict[str, int] = {}
        while pending and time.monotonic() - started < 60 * (jobs / ipm) * 3:
            for job_id in list(pending):
                status = client.get(f"/v1/jobs/{job_id}").json()["status"]
                if status in ("succeeded", "failed", "canceled"):
                    pending.discard(job_id)
                    statuses[status] = statuses.get(status, 0) + 1
            time.sleep(1)
        emulator = stack.emulator
        assert emulator is not None
        stats = emulator.stats
        admitted = sorted(stats.admitted)
        images = sum(n for _, n in admitted)
        span_s = admitted[-1][0] - admitted[0][0]
        # N calls span N - 1 intervals; the burst at the start goes at once and is left out of the rate.
        used = (images - 1) / span_s * 60 / ipm if span_s else 0.0
        calls = len(admitted) + stats.limited
        limited = stats.limited / calls if calls else 0.0
        took = time.monotonic() - started
    told = "learning it from headers" if learn else "configured with it"
    return [
        Row(
            f"traffic: {jobs} jobs at {ipm} images/min, darkroom {told}; ended",
            f"{statuses}, {len(pending)} still running after {took:.0f} s",
            "all end",
            not pending,
        ),
        Row(
            f"traffic: limit used (busiest 60 s: {busiest_minute(admitted)} images)",
            f"{used:.1%} ({images} images in {span_s:.0f} s)",
            f">= {GOAL_USED:.0%}",
            used >= GOAL_USED,
        ),
        Row(
            "traffic: provider calls answered 429",
            f"{limited:.1%} ({stats.limited} of {calls})",
            f"<= {GOAL_LIMITED:.0%}",
            limited <= GOAL_LIMITED,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=120)
    parser.add_argument("--ipm", type=int, default=60)
    parser.add_argument("--learn", action="store_true", help="configure no limit: learn it from the headers")
    args = parser.parse_args()
    table = rows(args.jobs, args.ipm, args.learn)
    print_table(table, "the shared rate limit against a provider enforcing its own")
    return 0 if all(row.ok for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
