"""What a benchmark run reports: each figure beside its ceiling, and the ratio."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["Figure", "MeasureResult", "peak_memory_mib", "print_table", "write_json"]


@dataclasses.dataclass(frozen=True)
class Figure:
    """One figure of a measure beside the ceiling measured in the same run.

    `ratio` is always "how close to the ceiling", 1.0 being the ceiling itself:
    figure / ceiling for a rate, ceiling / figure for a time. Store growth
    compares the store with itself: its ratio is the time at the large size
    over the time at the small one (its "ceiling"), and its target is <= 2.
    """

    name: str
    unit: str
    figure: float
    ceiling: float
    ratio: float
    target: str = ""

    @staticmethod
    def rate(name: str, unit: str, figure: float, ceiling: float, target: str = "") -> Figure:
        return Figure(name, unit, figure, ceiling, figure / ceiling, target)

    @staticmethod
    def time(name: str, unit: str, figure: float, ceiling: float, target: str = "") -> Figure:
        return Figure(name, unit, figure, ceiling, ceiling / figure, target)


@dataclasses.dataclass
class MeasureResult:
    """One measure on one engine: its figures, parameters and the nodes' peak memory."""

    measure: str
    engine: str
    figures: list[Figure]
    parameters: dict[str, Any]
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Node id -> VmHWM of its process in MiB, read just before it stopped.
    peak_memory_mib: dict[str, float] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


def peak_memory_mib(pid: int | None) -> float:
    """VmHWM (peak resident set) of a running process, from /proc; 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def print_table(results: list[MeasureResult], console: Console) -> None:
    table = Table(title="The exchange against this machine's ceiling (same run, same machine)")
    for column in ("engine", "measure", "figure", "ceiling", "ratio", "target", "peak MiB"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    for result in results:
        peak = max(result.peak_memory_mib.values(), default=0.0)
        for i, figure in enumerate(result.figures):
            table.add_row(
                result.engine,
                figure.name,
                f"{figure.figure:,.1f} {figure.unit}",
                f"{figure.ceiling:,.1f} {figure.unit}",
                f"{figure.ratio:.2f}",
                figure.target,
                f"{peak:,.0f}" if i == 0 else "",
            )
    console.print(table)


def write_json(results: list[MeasureResult], path: Path, run: dict[str, Any]) -> None:
    document = {
        **run,
        "load_average_end": list(os.getloadavg()),
        "results": [dataclasses.asdict(result) for result in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
