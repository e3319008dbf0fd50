"""Schedules: the experiment's flow, a generator yielding one Level per sparsity level it reaches."""

from __future__ import annotations

from typing import Callable, Iterator

from pruneexp.registry import Registry
from pruneexp.schedules.context import DenseCache, FileStore, Level, RunContext

Schedule = Callable[[RunContext], Iterator[Level]]
SCHEDULES: Registry[Schedule] = Registry("schedule")

# Register the built-in schedules (one module each).
from pruneexp.schedules import at_init, gmp, imp, oneshot  # noqa: E402,F401


def check_schedule(cfg) -> None:
    """The schedule's own config checks (registered as `check=`), run by `validate`."""
    check = SCHEDULES.meta(cfg.schedule.name).get("check")
    if check is not None:
        check(cfg)


__all__ = ["DenseCache", "FileStore", "Level", "RunContext", "SCHEDULES", "Schedule", "check_schedule"]
