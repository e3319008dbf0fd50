"""`logger=mlflow`: one MLflow run per pruneexp run (per invocation: a resumed run gets a new MLflow
run, its restored levels logged again) in the MLflow experiment `experiment_name` (default: the
pruneexp experiment). Params: the resolved config as dotted keys. Metrics: every evaluation
(`val_acc`, `test_acc`, `lr`, ... at a step counter running across phases) and every level
(`level_<metric>` at step = level). Tags: pruneexp.run_dir, pruneexp.run_hash, pruneexp.status.
Artifacts: the run directory's files (levels.csv, train_log.csv, config.yaml, summary.json, latency
CSVs; checkpoints with log_checkpoints=true).

The store defaults to SQLite at <results_dir>/mlflow.db with artifacts in <results_dir>/mlartifacts,
so `mlflow ui --backend-store-uri sqlite:///results/mlflow.db` shows every run of a sweep, no server.
Uses an explicit MlflowClient: no global MLflow state is changed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pruneexp.loggers import EVAL_METRICS, LEVEL_METRICS, flat_params, numbers

MAX_PARAM = 6000  # MLflow's limit on a param value's length


def default_uri(cfg: DictConfig) -> str:
    """sqlite:///<absolute results_dir>/mlflow.db."""
    return f"sqlite:///{(Path(str(cfg.results_dir)).absolute() / 'mlflow.db')}"


def run_name(directory: Path) -> str:
    """In a Hydra sweep, the job's values of the swept keys (e.g. 'sparsity=0.9 seed=1': the keys whose
    command-line override is a sweep, read from the sweep's multirun.yaml); else the run hash."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        hc = HydraConfig.get()
        sweep = OmegaConf.load(Path(hc.sweep.dir) / "multirun.yaml").hydra.overrides.task
        swept = {o.key_or_group for o in OverridesParser.create().parse_overrides(list(sweep)) if o.is_sweep_override()}
        task = [o for o in hc.overrides.task if o.split("=", 1)[0].lstrip("+~") in swept]
        if task:
            return " ".join(task)
    except Exception:  # not a sweep, or a launcher that keeps no multirun.yaml: the hash names the run
        pass
    return directory.name


class MlflowTracker:
    """Logs a run's params, metrics and files to MLflow through MlflowClient."""

    def __init__(self, cfg: DictConfig, options: DictConfig, directory: Path):
        from mlflow import MlflowClient
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        self.uri = options.tracking_uri or default_uri(cfg)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.directory, self.options = directory, options
        name = str(options.experiment_name)
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                artifacts = (Path(str(cfg.results_dir)).absolute() / "mlartifacts" / name).as_uri() if not options.tracking_uri else None
                self.experiment_id = self.client.create_experiment(name, artifact_location=artifacts)
            except MlflowException:  # another job of the sweep created it first
                self.experiment_id = self.client.get_experiment_by_name(name).experiment_id
        else:
            self.experiment_id = experiment.experiment_id
        # MLflow 3's UI opens an experiment of this kind on its runs table (not the GenAI traces view)
        self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", "custom_model_development")
        tags = {"pruneexp.run_dir": str(directory.absolute()), "pruneexp.run_hash": directory.name,
                "pruneexp.status": "running", "pruneexp.schedule": str(cfg.schedule.name),
                "pruneexp.criterion": str(cfg.criterion.name)}
        self.run_id = self.client.create_run(self.experiment_id, run_name=run_name(directory), tags=tags).info.run_id
        params = [Param(k, v[:MAX_PARAM]) for k, v in sorted(flat_params(cfg).items())]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _metrics(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(prefix + k, v, now, step) for k, v in values.items()])

    def log_eval(self, step: int, row: dict[str, Any]) -> None:
        """Metrics of one train_log.csv row at `step`."""
        self._metrics(numbers(row, EVAL_METRICS), step)

    def log_level(self, row: dict[str, Any]) -> None:
        """Metrics level_<metric> of one levels.csv row at step = level."""
        self._metrics(numbers(row, LEVEL_METRICS), int(row["level"]), "level_")

    def finish(self, status: str, rows: list[dict[str, Any]]) -> None:
        """Upload the run directory's files, tag the status, end the MLflow run."""
        if self.options.log_artifacts:
            for path in sorted(self.directory.rglob("*")):
                if not path.is_file() or path.name.startswith("."):
                    continue
                rel = path.relative_to(self.directory)
                if rel.parts[0] == "levels" and not self.options.log_checkpoints:
                    continue
                self.client.log_artifact(self.run_id, str(path), None if len(rel.parts) == 1 else str(rel.parent))
        self.client.set_tag(self.run_id, "pruneexp.status", status)
        self.client.set_terminated(self.run_id, "FINISHED" if status in ("complete", "partial") else "FAILED")


def open(cfg: DictConfig, options: DictConfig, directory: Path) -> MlflowTracker:  # noqa: A001
    """The MLflow tracker of the run in `directory`."""
    return MlflowTracker(cfg, options, directory)
