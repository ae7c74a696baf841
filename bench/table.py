"""What every benchmark reports: rows of one table (figure, measured, goal, pass or fail), printed together."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    figure: str
    measured: str
    goal: str
    ok: bool


def print_table(rows: list[Row], heading: str) -> None:
    widths = [max(len(text) for text in column) for column in zip(*_cells(rows), strict=True)]
    print(heading)
    for cells in _cells(rows):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())


def _cells(rows: list[Row]) -> list[tuple[str, str, str, str]]:
    header = ("figure", "measured", "goal", "")
    return [header, *((row.figure, row.measured, row.goal, "pass" if row.ok else "FAIL") for row in rows)]


# Within one `make bench`, bench/suite.py names a directory here: a benchmark leaves its measurement for a later one
# (memory_sizes.py prices worker_cpu.py's), so the suite measures each thing once. Run alone, each measures its own.
SHARED_DIR = "DARKROOM_BENCH_SHARED"


def remember(name: str, measured: dict[str, Any]) -> None:
    if directory := os.environ.get(SHARED_DIR):
        (Path(directory) / f"{name}.json").write_text(json.dumps(measured))


def recalled(name: str) -> dict[str, Any] | None:
    path = Path(os.environ.get(SHARED_DIR) or "/nonexistent") / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None
