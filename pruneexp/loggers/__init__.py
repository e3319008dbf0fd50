"""Experiment trackers, chosen by the `logger=` config group (conf/logger/ <-> this package):
`csv` (the run directory's own files, always written), `tensorboard`, `mlflow`, `wandb`; several at
once, e.g. `logger=[csv,tensorboard,mlflow]`.

The runner opens them once per run (`open_loggers`), calls `log_level(row, train_rows)` after each
level with the level's levels.csv row and its train_log.csv rows, and `finish(status, rows)` at the
end. Each tracker is imported only when selected, so the heavy libraries stay optional
(`pip install -e .[trackers]`); a tracker selected but not installed fails before training with the
install command. Steps: evaluation metrics use one step counter that runs on across the run's
phases (train_log.csv's `step` restarts in each phase); level metrics use the level number."""

from __future__ import annotations

import importlib
import importlib.util
import numbers as _numbers
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from pruneexp.errors import PruneexpError

# name -> (module, the pip package that provides it)
TRACKERS = {"tensorboard": ("pruneexp.loggers.tensorboard", "tensorboard"),
            "mlflow": ("pruneexp.loggers.mlflow", "mlflow"),
            "wandb": ("pruneexp.loggers.wandb", "wandb")}
EVAL_METRICS = ("lr", "train_loss", "val_loss", "val_acc", "test_loss", "test_acc")
LEVEL_METRICS = ("sparsity", "sparsity_all", "effective_sparsity", "nonzero_params", "flop_ratio", "connected_flop_ratio",
                 "val_loss", "val_acc", "test_loss", "test_acc", "best_val_acc", "test_acc_at_best", "best_step", "train_steps")


class Tracker(Protocol):
    """What one tracker implements (see tensorboard.py, mlflow.py, wandb.py)."""

    def log_eval(self, step: int, row: dict[str, Any]) -> None: ...

    def log_level(self, row: dict[str, Any], train_rows: list[dict[str, Any]]) -> None:
        """Log a level's evaluations (its train_log.csv rows) and then its levels.csv row. Evaluation
        steps run on across phases: a phase's step k is logged at (steps of earlier phases) + k."""
        if not self.trackers:
            return
        phases: dict[Any, list[dict[str, Any]]] = {}
        for r in train_rows:
            phases.setdefault(r.get("phase"), []).append(r)
        for rows in phases.values():
            rows = sorted(rows, key=lambda r: int(r["step"]))
            for r in rows:
                for t in self.trackers:
                    t.log_eval(self.offset + int(r["step"]), r)
            self.offset += int(rows[-1]["step"])
        for t in self.trackers:
            t.log_level(row)

    def finish(self, status: str, rows: list[dict[str, Any]]) -> None: ...


def numbers(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    """The finite numeric values of `keys` in `row` (missing and NaN left out: never a made-up 0)."""
    out = {}
    for key in keys:
        value = row.get(key)
        if isinstance(value, _numbers.Real) and not isinstance(value, bool) and value == value:  # numpy scalars too
            out[key] = float(value)
    return out


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as {dotted key: string}, tracker settings left out."""
    def walk(node: Any, prefix: str) -> dict[str, str]:
        if isinstance(node, dict):
            out: dict[str, str] = {}
            for k, v in node.items():
                out.update(walk(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: str(node)}

    tree = OmegaConf.to_container(cfg, resolve=True)
    tree.pop("logger", None)
    return walk(tree, "")


class Loggers:
    """The trackers of one run; forwards each level and the end of the run to every one of them."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers
        self.offset = 0  # evaluation steps of the phases already logged

    def log_level(self, row: dict[str, Any], train_rows: list[dict[str, Any]]) -> None:
        """Log a level's evaluations (train_log.csv rows, in order) and then its levels.csv row."""
        if not self.trackers:
            return
        last_phase, phase_end = None, 0
        for r in sorted(train_rows, key=lambda r: (str(r.get("phase")), r["step"])) if len({r.get("phase") for r in train_rows}) > 1 else train_rows:
            if r.get("phase") != last_phase and last_phase is not None:
                self.offset += phase_end
                phase_end = 0
            last_phase, phase_end = r.get("phase"), max(phase_end, int(r["step"]))
            for t in self.trackers:
                t.log_eval(self.offset + int(r["step"]), r)
        self.offset += phase_end
        for t in self.trackers:
            t.log_level(row)

    def finish(self, status: str, rows: list[dict[str, Any]]) -> None:
        """Close every tracker, telling it the run's status (complete, partial) and its level rows."""
        for t in self.trackers:
            t.finish(status, rows)


def selected(cfg: DictConfig) -> list[str]:
    """The trackers the config selects (csv is always on and needs no tracker)."""
    node = cfg.get("logger") or {}
    return [name for name in TRACKERS if node.get(name) is not None]


def check_installed(cfg: DictConfig) -> None:
    """Fail before any work if a selected tracker's library is not installed, naming the install command."""
    for name in selected(cfg):
        package = TRACKERS[name][1]
        if importlib.util.find_spec(package) is None:
            raise PruneexpError(f"logger={name} needs the '{package}' package, which is not installed: "
                                f"pip install -e '.[trackers]' (or pip install {package}).")


def open_loggers(cfg: DictConfig, directory: Path) -> Loggers:
    """The trackers `cfg.logger` selects, each started for the run in `directory`."""
    check_installed(cfg)
    trackers = []
    for name in selected(cfg):
        module = importlib.import_module(TRACKERS[name][0])
        trackers.append(module.open(cfg, cfg.logger[name], Path(directory)))
    return Loggers(trackers)
