"""The figures of the speed benchmarks, each with its goal and where the goal comes from, in the
machine-readable form `make bench` (scripts/bench_all.py) collects: a bench script run with
`--json PATH` writes

    {"benchmark": "bench_gmp", "threads": 1, "figures": [
        {"figure": "...", "value": 1.02, "goal": "<= 1.1", "source": "issue 28", "detail": "..."}, ...]}

A goal is a ratio measured within one process (never an absolute time: a shared machine makes
those meaningless), written as a comparison with a number (`<= 1.1`, `>= 0.95`, `< 1`); a figure
with no stated goal has goal None and says so in `source`. Each script stays usable alone: it
prints what it always printed, and writes the JSON only when asked.
"""

from __future__ import annotations

import json
import operator
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from pruneexp.io import atomic_write

COMPARE = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


@dataclass
class Figure:
    """One measured figure: `value` (a ratio; None where nothing could be measured, `detail` says
    why), its `goal` (`"<= 1.1"`, or None where none is stated), `source` (the issue or note that
    states the goal, or why there is none) and `detail` (the numbers behind the ratio)."""

    figure: str
    value: float | None
    goal: str | None
    source: str
    detail: str = ""

    def holds(self) -> bool | None:
        """Whether `value` meets `goal`; None where there is no goal."""
        return holds(self.value, self.goal)


def holds(value: float | None, goal: str | None) -> bool | None:
    """`value` against a goal written as `OP NUMBER` (OP one of <=, >=, <, >); None for no goal,
    False for a goal with no value (nothing measured meets nothing)."""
    if goal is None:
        return None
    op, _, number = goal.strip().partition(" ")
    if op not in COMPARE:
        raise ValueError(f"goal '{goal}' is not 'OP NUMBER' with OP one of {', '.join(COMPARE)}")
    return value is not None and bool(COMPARE[op](float(value), float(number)))


def write_json(path: str | os.PathLike, benchmark: str, threads: int, figures: list[Figure]) -> None:
    """Write a benchmark's figures for bench_all.py (atomically, pruneexp.io)."""
    text = json.dumps({"benchmark": benchmark, "threads": threads, "figures": [asdict(f) for f in figures]}, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def load_average() -> str:
    """The 1-minute load average (how busy the machine was), or '?' where /proc is absent."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"
