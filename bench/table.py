"""What every benchmark reports: rows of one table (figure, measured, goal, pass or fail), printed together."""

from __future__ import annotations

from dataclasses import dataclass


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
