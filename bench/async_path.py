"""The asynchronous path's cost in AWS requests: state transitions and Lambda invocations per job that WaveSpeed
takes 15 s to finish, measured through the served local stack with the template's own waits.

The jobs run on the `wavespeed` route with the emulator's predictions taking 15 s; each job's poller execution's
history gives its state transitions (what Step Functions bills), and the functions' own invocation counts what
Lambda bills: the api's submission, the worker's one claim and submission, the poller's polls, and notify's look
at the job's manifest (several manifests may share one invocation).

Goals: at most 12 state transitions and 8 Lambda invocations per job.
Usage: python bench/async_path.py [--jobs N]
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

from darkroom_local.emulator import EmulatorConfig  # noqa: E402
from tests.e2e.served import api_client, served_stack, wait_for_end  # noqa: E402
from tests.pipeline import execution, transitions  # noqa: E402

GOAL_TRANSITIONS, GOAL_INVOCATIONS = 12, 8
# The template's own waits, not the test suite's short ones.
TEMPLATE_WAITS = {"AsyncFirstPollSeconds": "15", "PollMaxWaitSeconds": "30"}


def rows(jobs: int = 5) -> list[Row]:
    with served_stack(parameters=TEMPLATE_WAITS, emulator=EmulatorConfig(async_ms=15_000)) as stack:
        # The api's own part is the one submission: the reads this benchmark makes while it waits are not the path's.
        functions = ("WorkerFunction", "PollerFunction", "NotifyFunction")
        before = {name: stack.functions[name].invoked for name in functions}
        with api_client(stack) as http:
            body = {"model": "gpt-image-2", "prompt": "a lighthouse", "provider": "wavespeed", "quality": "medium"}
            ids = [http.post("/v1/images/generations", json=body).json()["id"] for _ in range(jobs)]
            ended = [wait_for_end(http, job_id, timeout_s=120) for job_id in ids]
        assert {job["status"] for job in ended} == {"succeeded"}, [job["error"] for job in ended]
        counts = [len(transitions(execution(stack, job_id, timeout_s=60))) for job_id in ids]
        time.sleep(2)  # notify follows each manifest (S3 event, queue, poller) a moment after the job ends
        invoked = 1 + sum(stack.functions[name].invoked - before[name] for name in functions) / jobs
    per_job = statistics.mean(counts)
    return [
        Row(
            f"async path: state transitions per 15 s job ({jobs} jobs)",
            f"{per_job:.1f}",
            f"<= {GOAL_TRANSITIONS}",
            per_job <= GOAL_TRANSITIONS,
        ),
        Row(
            "async path: Lambda invocations per 15 s job (api, worker, polls, notify)",
            f"{invoked:.1f}",
            f"<= {GOAL_INVOCATIONS}",
            invoked <= GOAL_INVOCATIONS,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    table = rows(args.jobs)
    print_table(table, "the asynchronous path, per job")
    return 0 if all(row.ok for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
