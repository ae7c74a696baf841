"""`make bench`: every benchmark, then one table of all their figures (figure, measured, goal, pass or fail).

Each benchmark runs in its own interpreter (a fresh one, as each was written to run alone) and hands its rows back as
JSON; what it prints along the way shows as it runs. A benchmark that crashes or hangs becomes a FAIL row with its
error rather than ending the suite. Measurements one benchmark makes for another (worker_cpu's and worker_memory's
for memory_sizes) pass through a directory shared for this run only (table.SHARED_DIR), so nothing is measured twice.
bench/aws_cost.py joins the suite when it exists.

Exits 1 if any row failed.
Usage: python bench/suite.py [BENCH ...]   (default: all, in this order)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from table import SHARED_DIR, Row, print_table  # noqa: E402

# worker_cpu and worker_memory before memory_sizes, which prices their measurements.
BENCHES = [
    *("coldstart", "pipeline", "async_path", "concurrency", "traffic"),
    *("worker_cpu", "worker_memory", "memory_sizes"),
]
TIMEOUT_S = 30 * 60  # the longest (traffic) takes a few minutes: far past that, it is hung


def run_one(name: str, shared: Path) -> list[Row]:
    """One benchmark in a fresh interpreter: its rows, or one FAIL row saying why there are none."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--one", name, "--out", out.name]
        started = time.monotonic()
        try:
            # Standard error is kept for the FAIL row, and shown as well.
            done = subprocess.run(
                command, env={**os.environ, SHARED_DIR: str(shared)}, stderr=subprocess.PIPE, text=True,
                timeout=TIMEOUT_S,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return [Row(f"{name}: the benchmark", f"no answer after {TIMEOUT_S} s", "ends", False)]
        sys.stderr.write(done.stderr)
        print(f"[{name}: {time.monotonic() - started:.0f} s]", flush=True)
        found = Path(out.name).read_text()
        if done.returncode or not found:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            error = lines[-1].strip() if lines else f"exit status {done.returncode}"
            return [Row(f"{name}: the benchmark", f"crashed: {error[:160]}", "runs", False)]
        return [Row(**row) for row in json.loads(found)]


def one(name: str, out: Path) -> None:
    """In the child: the benchmark's rows, written as JSON."""
    rows: list[Row] = importlib.import_module(name).rows()
    out.write_text(json.dumps([dataclasses.asdict(row) for row in rows]))


def main() -> int:
    benches = BENCHES + (["aws_cost"] if (BENCH / "aws_cost.py").exists() else [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benches", nargs="*", metavar="BENCH", help=", ".join(benches))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.out)
        return 0
    if unknown := set(args.benches) - set(benches):
        parser.error(f"no such benchmark: {', '.join(sorted(unknown))}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as shared:
        for name in args.benches or benches:
            print(f"[{name}]", flush=True)
            rows += run_one(name, Path(shared))
    print()
    print_table(
        rows,
        f"make bench: {sum(row.ok for row in rows)} of {len(rows)} figures pass (Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, {platform.machine()})",
    )
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
