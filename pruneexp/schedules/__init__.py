"""Schedules: the experiment's flow, a generator yielding one Level per sparsity level it reaches."""

from __future__ import annotations

from typing import Callable, Iterator

from pruneexp.registry import Registry
from pruneexp.schedules.context import DenseCache, Level, RunContext

Schedule = Callable[[RunContext], Iterator[Level]]
SCHEDULES: Registry[Schedule] = Registry("schedule")

# Register the built-in schedules (one module each).
from pruneexp.schedules import oneshot  # noqa: E402,F401

__all__ = ["DenseCache", "Level", "RunContext", "SCHEDULES", "Schedule"]
