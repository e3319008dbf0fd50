"""Fault injection for the kill tests (tests/test_safety.py, scripts/fault_test.py).

A simulated kill stops a run in the middle of a file write (a torn temporary left behind, as a
real SIGKILL leaves it) or right after one, or before or after a training phase; from then on the
"dead" process writes nothing more, as a killed one would not. `compare_runs` checks that the
files of a run equal those of an uninterrupted one: byte for byte where the contents are
deterministic (levels.csv, layers.csv), train_log.csv without its wall times, and the level files
by content (torch.save stamps every file with a random serialization id)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch

import pruneexp.io as pio
import pruneexp.results.store as pstore
from pruneexp.schedules.context import RunContext


class Killed(BaseException):
    """A simulated SIGKILL (BaseException, so nothing in pruneexp catches and recovers from it)."""


@dataclass
class Faults:
    """Counts atomic writes and training phases; kills at `kill_at` = (kind, index, stage), kind
    'write' (stage 'torn' or 'after') or 'train' (stage 'before' or 'after')."""

    kill_at: tuple[str, int, str] | None = None
    writes: int = 0
    trains: int = 0
    dead: bool = False
    where: str = ""
    names: list[str] = field(default_factory=list)

    def _hit(self, kind: str, index: int, stage: str, what: str) -> None:
        if self.kill_at == (kind, index, stage):
            self.dead, self.where = True, f"{kind} #{index} ({what}) {stage}"
            raise Killed(self.where)


@contextmanager
def injected(faults: Faults) -> Iterator[Faults]:
    """Patch pruneexp's atomic writes and RunContext.train to count (and kill at) `faults.kill_at`."""
    real_write, real_train = pio.atomic_write, RunContext.train

    def write(path, fn) -> None:
        path = Path(path)
        if faults.dead:
            raise Killed("dead process")
        i = faults.writes
        faults.writes += 1
        faults.names.append(path.name)
        if faults.kill_at == ("write", i, "torn"):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            os.close(fd)
            fn(Path(tmp))
            with open(tmp, "r+b") as f:  # killed mid-write: half the bytes, never renamed
                f.truncate(os.path.getsize(tmp) // 2)
            faults._hit("write", i, "torn", path.name)
        real_write(path, fn)
        faults._hit("write", i, "after", path.name)

    def train(self, *args, **kwargs):
        if faults.dead:
            raise Killed("dead process")
        i = faults.trains
        faults.trains += 1
        faults._hit("train", i, "before", str(args[3] if len(args) > 3 else kwargs.get("phase")))
        result = real_train(self, *args, **kwargs)
        faults._hit("train", i, "after", str(args[3] if len(args) > 3 else kwargs.get("phase")))
        return result

    pio.atomic_write, pstore.atomic_write, RunContext.train = write, write, train
    try:
        yield faults
    finally:
        pio.atomic_write, pstore.atomic_write, RunContext.train = real_write, real_write, real_train


def run_killed_at(cfg, kill_at: tuple[str, int, str] | None) -> Faults:
    """Run `cfg` once with a simulated kill at `kill_at` (a run that ends early is what a killed
    process leaves on disk); return the Faults, whose `where` names the point reached."""
    from pruneexp.runner import run

    faults = Faults(kill_at=kill_at)
    with injected(faults):
        try:
            run(cfg)
        except Killed:
            pass
    return faults


def kill_points(reference: Faults) -> list[tuple[str, int, str]]:
    """Every kill point of a run whose uninterrupted counts are in `reference`."""
    points = [("write", i, s) for i in range(reference.writes) for s in ("torn", "after")]
    return points + [("train", i, s) for i in range(reference.trains) for s in ("before", "after")]


def _log(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    return frame.drop(columns=[c for c in frame.columns if c.startswith("elapsed")])


def compare_runs(got: Path, want: Path) -> list[str]:
    """What differs between two run directories (empty when they agree)."""
    diffs = []
    for name in ("levels.csv", "layers.csv"):
        if (got / name).read_bytes() != (want / name).read_bytes():
            diffs.append(name)
    a, b = _log(got / "train_log.csv"), _log(want / "train_log.csv")
    if a.shape != b.shape or not a.equals(b):
        diffs.append(f"train_log.csv ({len(a)} rows, want {len(b)})")
    levels = sorted(p.name for p in (want / "levels").glob("level_*.pt"))
    if sorted(p.name for p in (got / "levels").glob("level_*.pt")) != levels:
        diffs.append("level files")
    for name in levels:
        x, y = (torch.load(d / "levels" / name, weights_only=True) for d in (got, want))
        if not _same(x, y):
            diffs.append(name)
    left = [p.name for p in pio.temporaries(got) + pio.temporaries(got / "levels")]
    if left:
        diffs.append(f"temporaries left: {left}")
    return diffs


def _same(x, y) -> bool:
    if isinstance(x, dict):  # wall times (elapsed_s in the saved training log) are not deterministic
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x if not k.startswith("elapsed"))
    if isinstance(x, list):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    if isinstance(x, torch.Tensor):
        return x.dtype == y.dtype and x.shape == y.shape and bool(((x == y) | (x.isnan() & y.isnan())).all())
    if isinstance(x, float) and isinstance(y, float):
        return x == y or (x != x and y != y)  # NaN equals NaN here
    return x == y
