"""`logger=tensorboard`: one event file per run in <log_dir>/<experiment>/<run hash>/ (torch's
SummaryWriter): `eval/<metric>` at every evaluation (step counter running across phases),
`level/<metric>` per level (step = level number), the resolved config as text, and at the end the
run's accuracy-vs-sparsity figure. View: `tensorboard --logdir results/tensorboard`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pruneexp.loggers import EVAL_METRICS, LEVEL_METRICS, numbers


class TensorBoardTracker:
    """Writes a run's scalars, config and figure with torch.utils.tensorboard.SummaryWriter."""

    def __init__(self, cfg: DictConfig, options: DictConfig, directory: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(options.log_dir) / str(cfg.experiment) / directory.name
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.title = f"{cfg.experiment}/{directory.name}"
        config = OmegaConf.to_yaml(cfg, resolve=True)
        self.writer.add_text("config", "```yaml\n" + config + "\n```", 0)  # markdown: keeps the indentation

    def log_eval(self, step: int, row: dict[str, Any]) -> None:
        """Scalars eval/<metric> of one train_log.csv row."""
        for key, value in numbers(row, EVAL_METRICS).items():
            self.writer.add_scalar(f"eval/{key}", value, step)

    def log_level(self, row: dict[str, Any]) -> None:
        """Scalars level/<metric> of one levels.csv row, at step = level."""
        for key, value in numbers(row, LEVEL_METRICS).items():
            self.writer.add_scalar(f"level/{key}", value, int(row["level"]))
        self.writer.flush()

    def finish(self, status: str, rows: list[dict[str, Any]]) -> None:
        """Add the accuracy-vs-sparsity figure of the run's levels and close the event file."""
        if rows:
            from pruneexp import plots

            frame = pd.DataFrame(rows)
            table = pd.DataFrame({"setup": f"{self.title} ({status})", "level": frame["level"],
                                  "remaining_mean": 1.0 - frame["sparsity"], "test_acc_mean": frame["test_acc"],
                                  "test_acc_std": float("nan"), "seeds": 1})
            self.writer.add_figure("accuracy_vs_sparsity", plots.level_curves(table, "test_acc", self.title), len(rows) - 1)
        self.writer.add_text("status", status, len(rows))
        self.writer.close()


def open(cfg: DictConfig, options: DictConfig, directory: Path) -> TensorBoardTracker:  # noqa: A001
    """The TensorBoard tracker of the run in `directory`."""
    return TensorBoardTracker(cfg, options, directory)
