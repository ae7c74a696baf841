"""The worker's memory size chosen by measurement: the cheapest that keeps the overhead goals and holds the largest
request, against the MemorySize template.yaml gives it.

Lambda gives CPU in proportion to memory: 1769 MB is one full vCPU, and a single thread (the worker's) gains nothing
above it. So the worker's CPU work, measured here on one core (bench/worker_cpu.py: a warm worker's whole job for a
1024x1024 image, and the image's own share of it, in the costliest of the three formats), takes CPU / share of wall
time at a size whose share of a vCPU is below one. For each size:
- its wall time for that work, and what it bills per image: GB-seconds and USD at arm64's price, for the work itself
  and with --wait-s of provider wait added (billed at the same rate while the worker waits for the images);
- whether it keeps the goals: the image's handling within 150 ms, and the worker's whole job within the pipeline's
  100 ms p50 overhead budget. The local pipeline's own p50 (bench/pipeline.py) is not the base: most of it is the
  local stack's (moto and pollers sharing one process), which no memory size changes;
- whether it holds the largest request the catalog allows (bench/worker_memory.py) within 75% of its memory.
Within `make bench` both measurements are the ones the suite just made; run alone, this makes its own.

Goal: the template's worker MemorySize is the cheapest size that keeps the goals and holds the largest request.
Usage: python bench/memory_sizes.py [--wait-s S] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench")]

import worker_cpu  # noqa: E402
import worker_memory  # noqa: E402
from table import Row, print_table, recalled  # noqa: E402

SIZES_MB = (512, 768, 1024, 1536, 1769, 2048, 3008)
FULL_VCPU_MB = 1769
USD_PER_GB_S = 0.0000133334  # Lambda arm64, first pricing tier, as of 2026-11
GOAL_IMAGE_MS = worker_cpu.GOAL_MS_PER_1024
GOAL_P50_MS = 100  # bench/pipeline.py's p50 goal
MEMORY_SHARE = worker_memory.GOAL_SHARE
IMAGE = "1024x1024"


@dataclass(frozen=True)
class Size:
    memory_mb: int
    vcpu: float
    image_ms: float  # wall time of the image's own handling at this size
    job_ms: float  # wall time of the worker's whole job (a 1024x1024 image) at this size
    gb_s: float  # per image, the job's work alone
    usd: float  # per image, the job's work and the provider wait
    fits: bool
    keeps_goals: bool


def measurements(runs: int) -> tuple[dict[str, float], float, int]:
    """(the costliest 1024x1024 case's CPU, the largest request's peak MiB, the worker's MemorySize)."""
    cpu = recalled("worker_cpu") or worker_cpu.measure(runs, sizes=(IMAGE,))
    memory = recalled("worker_memory") or worker_memory.measure()
    cases = [case for name, case in cpu["cases"].items() if name.startswith(IMAGE + " ")]
    costliest = max(cases, key=lambda case: case["job_ms"])
    largest = list(memory["peaks"].values())[-1]["peak_mib"]  # worker_memory measures the largest request last
    return costliest, largest, memory["memory_mb"]


def sized(memory_mb: int, cpu: dict[str, float], peak_mib: float, wait_s: float) -> Size:
    vcpu = min(memory_mb, FULL_VCPU_MB) / FULL_VCPU_MB
    image_ms, job_ms = cpu["image_ms"] / vcpu, cpu["job_ms"] / vcpu
    gb_s = memory_mb / 1024 * job_ms / 1000
    usd = memory_mb / 1024 * (job_ms / 1000 + wait_s) * USD_PER_GB_S
    return Size(
        memory_mb,
        vcpu,
        image_ms,
        job_ms,
        gb_s,
        usd,
        fits=peak_mib <= MEMORY_SHARE * memory_mb,
        keeps_goals=image_ms <= GOAL_IMAGE_MS and job_ms <= GOAL_P50_MS,
    )


def markdown(sizes: list[Size], wait_s: float, chosen: Size | None, template_mb: int) -> str:
    lines = [
        f"| MemorySize | vCPU | image handling (<= {GOAL_IMAGE_MS:.0f} ms) | worker job (<= {GOAL_P50_MS} ms) | "
        f"GB-s per image | USD per image | USD with {wait_s:g} s wait | holds largest | keeps goals |",
        "|---:|---:|---:|---:|---:|---:|---:|:-:|:-:|",
    ]
    for size in sizes:
        mark = " (chosen)" if size is chosen else " (template)" if size.memory_mb == template_mb else ""
        lines.append(
            f"| {size.memory_mb} MB{mark} | {size.vcpu:.2f} | {size.image_ms:.0f} ms | {size.job_ms:.0f} ms | "
            f"{size.gb_s:.4f} | {size.gb_s * USD_PER_GB_S:.8f} | {size.usd:.7f} | {'yes' if size.fits else 'no'} | "
            f"{'yes' if size.keeps_goals else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def rows(runs: int = 9, wait_s: float = 20.0, markdown_file: Path | None = None) -> list[Row]:
    cpu, peak_mib, template_mb = measurements(runs)
    candidates = sorted({*SIZES_MB, template_mb})
    sizes = [sized(mb, cpu, peak_mib, wait_s) for mb in candidates]
    good = [size for size in sizes if size.fits and size.keeps_goals]
    chosen = min(good, key=lambda size: (size.usd, size.memory_mb), default=None)
    table = markdown(sizes, wait_s, chosen, template_mb)
    print(
        f"worker memory sizes for a {IMAGE} image: {cpu['job_ms']:.0f} ms of job CPU on one core, "
        f"{cpu['image_ms']:.0f} of them the image's; largest request {peak_mib:.0f} MiB\n{table}"
    )
    if markdown_file:
        markdown_file.write_text(table)
    template = next(size for size in sizes if size.memory_mb == template_mb)
    return [
        Row(
            "worker MemorySize: cheapest that keeps the goals and holds the largest request",
            f"{chosen.memory_mb if chosen else 'none'} MB, template {template_mb} MB "
            f"({template.image_ms:.0f} ms image, {template.job_ms:.0f} ms job there)",
            "template = cheapest",
            # The template's own size passes only where it keeps the goals, holds the request, and costs no more.
            chosen is not None and template in good and template.usd <= chosen.usd,
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--wait-s", type=float, default=20.0, help="provider wait billed per image (default 20)")
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown to this file")
    args = parser.parse_args()
    table = rows(args.runs, args.wait_s, args.markdown)
    print_table(table, "the worker's memory size")
    return 0 if all(row.ok for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
