"""`logger=wandb`: a Weights & Biases run per pruneexp run, offline by default (no network, no
account; `wandb sync <dir>/wandb/offline-run-*` uploads later). Config: the resolved config.
History: `eval/<metric>` against `eval/step` (a counter running across phases) and
`level/<metric>` against `level/level`. Summary: the final level and `status`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pruneexp.loggers import EVAL_METRICS, LEVEL_METRICS, numbers


class WandbTracker:
    """Logs a run with the wandb library (wandb.init with the configured mode)."""

    def __init__(self, cfg: DictConfig, options: DictConfig, directory: Path):
        import wandb

        config = OmegaConf.to_container(cfg, resolve=True)
        config.pop("logger", None)
        Path(str(options.dir)).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=str(options.project), entity=options.entity, mode=str(options.mode),
                              dir=str(options.dir), name=directory.name, group=str(cfg.experiment), config=config,
                              tags=[str(cfg.schedule.name), str(cfg.criterion.name)],
                              settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
        self.directory = directory
        self.run.define_metric("eval/step")
        self.run.define_metric("eval/*", step_metric="eval/step")
        self.run.define_metric("level/level")
        self.run.define_metric("level/*", step_metric="level/level")

    def log_eval(self, step: int, row: dict[str, Any]) -> None:
        """History row eval/<metric> at eval/step."""
        self.run.log({"eval/step": step, **{f"eval/{k}": v for k, v in numbers(row, EVAL_METRICS).items()}})

    def log_level(self, row: dict[str, Any]) -> None:
        """History row level/<metric> at level/level."""
        self.run.log({"level/level": int(row["level"]), **{f"level/{k}": v for k, v in numbers(row, LEVEL_METRICS).items()}})

    def finish(self, status: str, rows: list[dict[str, Any]]) -> None:
        """Summary (status, run directory) and the end of the wandb run."""
        self.run.summary["status"] = status
        self.run.summary["run_dir"] = str(self.directory.absolute())
        self.run.finish()


def open(cfg: DictConfig, options: DictConfig, directory: Path) -> WandbTracker:  # noqa: A001
    """The wandb tracker of the run in `directory`."""
    return WandbTracker(cfg, options, directory)
