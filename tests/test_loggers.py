"""`logger=` trackers (issue 11): a run logged to TensorBoard, MLflow and wandb (offline) is read
back through each library's own reader and compared with the run's levels.csv and train_log.csv.
A tracker whose library is absent skips its test (CI installs them: the `trackers` extra)."""

import importlib.util
import struct
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY
from pruneexp.runner import run

INSTALLED = [n for n in ("tensorboard", "mlflow", "wandb") if importlib.util.find_spec(n) is not None]
QUICK = [*TINY, "hardware.levels=none", "train.duration=4ep", "schedule.finetune.duration=2ep"]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One oneshot run with every installed tracker; its directory, results root and files."""
    from hydra import compose, initialize_config_dir

    from pruneexp.cli import CONF_DIR
    from pruneexp.conf_store import register_configs

    root = tmp_path_factory.mktemp("loggers")
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"results_dir={root / 'results'}", *QUICK, f"logger=[csv,{','.join(INSTALLED)}]"])
    out = run(cfg)
    return out.directory, root / "results", pd.read_csv(out.directory / "levels.csv"), pd.read_csv(out.directory / "train_log.csv")


def test_tensorboard_scalars_config_and_figure(logged):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    directory, results, levels, log = logged
    acc = EventAccumulator(str(results / "tensorboard" / "default" / directory.name),
                           size_guidance={"scalars": 0, "images": 0, "tensors": 0}).Reload()
    for metric in ("test_acc", "val_acc", "sparsity", "flop_ratio"):
        events = acc.Scalars(f"level/{metric}")
        assert [e.step for e in events] == levels["level"].tolist()
        assert [e.value for e in events] == pytest.approx(levels[metric].tolist(), rel=1e-6)  # stored as float32
    evals = acc.Scalars("eval/val_acc")
    assert [e.value for e in evals] == pytest.approx(log["val_acc"].tolist(), rel=1e-6)
    steps = [e.step for e in evals]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one counter across dense and fine-tuning
    dense_steps = int(log[log["phase"] == "dense"]["step"].max())
    assert steps[-1] == dense_steps + int(log[log["phase"] == "finetune"]["step"].max())
    assert "accuracy_vs_sparsity" in acc.Tags()["images"]
    config = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "sparsity: 0.9" in config and "lenet_300_100" in config


def test_mlflow_run_params_metrics_and_artifacts(logged):
    pytest.importorskip("mlflow")
    import mlflow
    from mlflow import MlflowClient

    directory, results, levels, log = logged
    uri = f"sqlite:///{results / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=["default"])
    finally:
        mlflow.set_tracking_uri(None)
    assert len(runs) == 1
    r = runs.iloc[0]
    assert r["status"] == "FINISHED" and r["tags.pruneexp.status"] == "complete" and r["tags.pruneexp.run_hash"] == directory.name
    assert r["params.sparsity"] == "0.9" and r["params.model.name"] == "lenet_300_100" and r["params.schedule.name"] == "oneshot"
    assert not any(c.startswith("params.logger") for c in runs.columns)
    assert r["metrics.level_test_acc"] == pytest.approx(levels["test_acc"].iloc[-1])  # the last level's value
    client = MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(r["run_id"], "level_test_acc")
    assert [(m.step, m.value) for m in history] == [(int(k), pytest.approx(v)) for k, v in zip(levels["level"], levels["test_acc"])]
    evals = client.get_metric_history(r["run_id"], "val_acc")
    assert [m.value for m in sorted(evals, key=lambda m: m.step)] == pytest.approx(log["val_acc"].tolist())
    artifacts = {a.path for a in client.list_artifacts(r["run_id"])}
    assert {"config.yaml", "levels.csv", "train_log.csv", "summary.json"} <= artifacts and "levels" not in artifacts
    copy = Path(client.download_artifacts(r["run_id"], "levels.csv", str(results.parent / "dl")))
    assert copy.read_bytes() == (directory / "levels.csv").read_bytes()


def _wandb_records(path: Path):
    """The records of a wandb transaction log (.wandb): a 7-byte header, then LevelDB-log blocks of
    32 KiB whose chunks (crc32, length, type: full/first/middle/last) hold wandb's own protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - (pos % block)
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def test_wandb_offline_history_and_summary(logged):
    pytest.importorskip("wandb")
    import json

    directory, results, levels, log = logged
    (run_file,) = (results / "wandb").glob("offline-run-*/run-*.wandb")
    history, summary, config = [], {}, {}
    for record in _wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update})
        elif kind in ("config", "run"):  # the config comes with the run record, updates in config records
            updates = record.config.update if kind == "config" else record.run.config.update
            config.update({item.key: json.loads(item.value_json) for item in updates})
    level_rows = [h for h in history if "level/level" in h]
    assert [h["level/level"] for h in level_rows] == levels["level"].tolist()
    assert [h["level/test_acc"] for h in level_rows] == pytest.approx(levels["test_acc"].tolist())
    assert [h["eval/val_acc"] for h in history if "eval/step" in h] == pytest.approx(log["val_acc"].tolist())
    assert summary.get("status") == "complete"
    assert config["sparsity"] == 0.9 and "logger" not in config


def test_a_tracker_that_is_not_installed_fails_before_training(make_cfg, monkeypatch):
    from pruneexp import loggers
    from pruneexp.errors import PruneexpError

    monkeypatch.setitem(loggers.TRACKERS, "tensorboard", ("pruneexp.loggers.tensorboard", "no_such_package_pruneexp"))
    with pytest.raises(PruneexpError, match=r"pip install -e '.\[trackers\]'"):
        run(make_cfg(*QUICK, "logger=tensorboard"))
