"""Schedules: the experiment's flow, a generator yielding one Level per sparsity level it reaches."""

from __future__ import annotations

from typing import Callable, Iterator

from pruneexp.registry import Registry, import_modules
from pruneexp.schedules.context import DenseCache, FileStore, Level, RunContext

Schedule = Callable[[RunContext], Iterator[Level]]
SCHEDULES: Registry[Schedule] = Registry("schedule")

# Register the built-in schedules (one module each).
import_modules(__name__)  # every module of this package registers its schedule: a new schedule is a new file


def check_schedule(cfg) -> None:
    """The schedule's own config checks (registered as `check=`), run by `validate`."""
    check = SCHEDULES.meta(cfg.schedule.name).get("check")
    if check is not None:
        check(cfg)


__all__ = ["DenseCache", "FileStore", "Level", "RunContext", "SCHEDULES", "Schedule", "check_schedule"]
