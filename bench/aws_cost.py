"""What a job costs in AWS per image, on every path, from the jobs' own cost ledgers (darkroom.ledger), measured
through the served local stack in one run.

Paths: sync (the openai route), async (wavespeed, a 15 s render with the template's own waits), edit (an inline
image), batch (the batch tier, sent by the batcher and followed by the batch poller). Each job's `cost.aws_usd` is
read once it has ended and its manifest is confirmed; Lambda time is what each step took here, at its function's
template memory, which errs high (moto answers slower than AWS does). Webhook deliveries are not in a job's
ledger (they are per endpoint).

Goal, per image on every path: at most 1% of the medium 1024x1024 price ($0.053) and 10% of the low one ($0.006).
Usage: python bench/aws_cost.py [--jobs N]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"  # before darkroom's logger is made on import
os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
sys.path[:0] = [str(REPO / "layers" / "darkroom"), str(REPO / "local"), str(REPO), str(REPO / "bench")]

from PIL import Image  # noqa: E402
from table import Row, print_table  # noqa: E402

from darkroom_local.emulator import EmulatorConfig  # noqa: E402
from tests.e2e.served import api_client, served_stack, wait_for_end  # noqa: E402

MEDIUM, LOW = Decimal("0.053"), Decimal("0.006")
GOAL = min(MEDIUM / 100, LOW / 10)
PARAMETERS = {
    # The template's asynchronous waits; batches of `jobs`, checked a second after they are sent.
    "AsyncFirstPollSeconds": "15",
    "PollMaxWaitSeconds": "30",
    "BatchMaxWaitSeconds": "3600",
    "BatchFirstPollSeconds": "1",
}


def _edit_image() -> str:
    out = io.BytesIO()
    Image.new("RGB", (256, 256), (40, 120, 200)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def rows(jobs: int = 3) -> list[Row]:
    body = {"model": "gpt-image-2", "size": "1024x1024", "quality": "medium"}
    paths: dict[str, tuple[str, dict[str, Any]]] = {
        "sync": ("generations", body),
        "async": ("generations", {**body, "provider": "wavespeed"}),
        "edit": ("edits", {**body, "images": [{"image_url": _edit_image()}]}),
        "batch": ("generations", {**body, "tier": "batch"}),
    }
    per_image: dict[str, list[Decimal]] = {}
    with (
        served_stack(
            parameters={**PARAMETERS, "BatchMaxJobs": str(jobs)},
            emulator=EmulatorConfig(async_ms=15_000),
            schedule_interval_s=1,
        ) as stack,
        api_client(stack) as http,
    ):
        submitted = {
            path: [
                http.post(f"/v1/images/{endpoint}", json={**fields, "prompt": f"{path} harbour {i}"}).json()["id"]
                for i in range(jobs)
            ]
            for path, (endpoint, fields) in paths.items()
        }
        for ids in submitted.values():
            ended = [wait_for_end(http, job_id, timeout_s=120) for job_id in ids]
            assert {job["status"] for job in ended} == {"succeeded"}, [job["error"] for job in ended]
        time.sleep(2)  # each job's manifest written and confirmed: the last of its own writes
        for path, ids in submitted.items():
            for job_id in ids:
                job = http.get(f"/v1/jobs/{job_id}").json()
                per_image.setdefault(path, []).append(Decimal(str(job["cost"]["aws_usd"])) / len(job["outputs"]))
    table = []
    for path, costs in per_image.items():
        cost = Decimal(statistics.median(costs))
        table.append(
            Row(
                f"AWS cost per image, {path} path ({jobs} jobs, from their ledgers)",
                f"${cost:.7f} = {cost / MEDIUM:.3%} of medium, {cost / LOW:.2%} of low",
                "<= 1% of $0.053, <= 10% of $0.006",
                cost <= GOAL,
            )
        )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3)
    table = rows(parser.parse_args().jobs)
    print_table(table, "AWS cost per image, by path")
    return 0 if all(row.ok for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
