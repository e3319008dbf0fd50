"""`pruneexp run` end to end on tiny configs: files on disk, determinism, resume, sweeps, bad input."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO, TINY
from pruneexp.runner import run

FILES = ["config.yaml", "levels.csv", "layers.csv", "train_log.csv", "summary.json",
         "levels/level_000.pt", "levels/level_001.pt", "levels/level_002.pt"]


def test_default_oneshot_run_writes_every_file(make_cfg):
    out = run(make_cfg(*TINY))
    for name in FILES:
        assert (out.directory / name).exists(), name
    levels = pd.read_csv(out.directory / "levels.csv")
    assert levels["name"].tolist() == ["dense", "pruned", "finetuned"]
    assert levels["sparsity"].tolist()[0] == 0.0
    layers = pd.read_csv(out.directory / "layers.csv")
    n_layers = layers["layer"].nunique()
    for level in (1, 2):
        row = levels.iloc[level]
        assert abs(row["sparsity"] * row["prunable_params"] - 0.9 * row["prunable_params"]) <= n_layers
        assert row["effective_flops"] < row["dense_flops"]
        assert row["connected_flops"] <= row["effective_flops"]  # the weights on an input-to-output path, a subset
        assert row["connected_flop_ratio"] == row["connected_flops"] / row["dense_flops"]
    assert levels.iloc[2]["test_acc"] > 0.8  # digits after a short fine-tune
    summary = json.loads((out.directory / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["levels"] == 3
    # the saved fine-tuned model has exactly the masked weights at zero
    state = torch.load(out.directory / "levels/level_002.pt", weights_only=True)
    for name, mask in state["masks"]["masks"].items():
        assert (state["model"][name][~mask] == 0).all()
    log = pd.read_csv(out.directory / "train_log.csv")
    assert set(log["phase"]) == {"dense", "finetune"} and log["val_acc"].notna().all()


def test_same_seed_gives_identical_levels_csv(make_cfg, tmp_path):
    a = run(make_cfg(*TINY, f"results_dir={tmp_path / 'a'}"))
    b = run(make_cfg(*TINY, f"results_dir={tmp_path / 'b'}"))
    assert a.directory.name == b.directory.name
    assert (a.directory / "levels.csv").read_bytes() == (b.directory / "levels.csv").read_bytes()
    c = run(make_cfg(*TINY, "seed=1", f"results_dir={tmp_path / 'c'}"))
    assert c.directory.name != a.directory.name
    assert (c.directory / "levels.csv").read_bytes() != (a.directory / "levels.csv").read_bytes()


def test_interrupted_run_resumes_with_the_same_numbers(make_cfg):
    cfg = make_cfg(*TINY)
    full = run(cfg)
    reference = (full.directory / "levels.csv").read_bytes()
    # simulate an interruption after level 1: the last level and the completion mark are missing
    (full.directory / "levels/level_002.pt").unlink()
    summary = json.loads((full.directory / "summary.json").read_text())
    (full.directory / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    resumed = run(cfg)
    assert resumed.resumed_levels == 2
    assert (resumed.directory / "levels.csv").read_bytes() == reference
    # a complete run is not redone
    again = run(cfg)
    assert again.resumed_levels == 3


def test_cli_multirun_writes_one_directory_per_job(cli, tmp_path):
    proc = cli("run", "-m", "sparsity=0.5,0.8", *TINY)
    assert proc.returncode == 0, proc.stderr
    dirs = sorted(p.parent for p in (tmp_path / "results" / "default").glob("*/levels.csv"))
    assert len(dirs) == 2
    got = sorted(pd.read_csv(d / "levels.csv").iloc[-1]["sparsity"] for d in dirs)
    assert got == pytest.approx([0.5, 0.8], abs=1e-3)


def test_cli_run_prints_the_level_table(cli):
    proc = cli("run", "train.duration=2ep", "schedule.finetune.duration=1ep")
    assert proc.returncode == 0, proc.stderr
    assert "finetuned" in proc.stdout and "test acc" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["dataset=nope"], "Could not find 'dataset/nope'"),
    (["model=nope"], "Could not find 'model/nope'"),
    (["model.name=nope"], "Unknown model 'nope'"),
    (["criterion.name=magnitud"], "Did you mean 'magnitude'"),
    (["schedule.name=nope"], "Unknown schedule 'nope'"),
    (["sparsity=1.2"], "outside [0, 1)"),
    (["train.lr=fast"], "train.lr"),
    (["train.duration=10epochs"], "'<n>ep'"),
    (["dataset=mnist", "dataset.root=/nonexistent/pruneexp-data", "dataset.download=false"], "PRUNEEXP_DATA"),
])
def test_bad_input_fails_clearly_before_training(cli, args, message):
    proc = cli("run", *args)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert "level 0" not in proc.stdout  # nothing trained


def test_list_shows_every_registry(cli):
    proc = cli("list")
    assert proc.returncode == 0, proc.stderr
    rows = {tuple(cell.strip() for cell in line.strip("│ ").split("│")[:2]) for line in proc.stdout.splitlines() if line.startswith("│")}
    for kind, name in [("dataset", "digits"), ("dataset", "mnist1d"), ("model", "lenet_300_100"), ("model", "resnet20"),
                       ("model", "vit"), ("model", "torchvision"), ("criterion", "magnitude"), ("criterion", "wanda"),
                       ("schedule", "oneshot"), ("schedule", "oneshot_rewind"), ("hardware", "cpu"), ("hardware", "cpu_1thread"),
                       ("hardware", "cuda")]:
        assert (kind, name) in rows, (kind, name)  # whole cells: "cpu" must not pass on "cpu_1thread" alone


def test_runs_that_differ_only_in_pruning_share_one_dense_network(make_cfg, tmp_path):
    a = run(make_cfg(*TINY, "sparsity=0.5"))
    b = run(make_cfg(*TINY, "sparsity=0.8"))
    assert len(list((tmp_path / "results" / "pretrained").iterdir())) == 1
    assert a.levels[0] == b.levels[0]
    # the shared network is exactly the one a fresh dense training gives
    fresh = run(make_cfg(*TINY, "sparsity=0.8", "share_dense=false", f"results_dir={tmp_path / 'fresh'}"))
    assert (fresh.directory / "levels.csv").read_bytes() == (b.directory / "levels.csv").read_bytes()
    assert not (tmp_path / "fresh" / "pretrained").exists()
    # a different training config trains its own
    run(make_cfg(*TINY, "sparsity=0.8", "train.lr=0.05"))
    assert len(list((tmp_path / "results" / "pretrained").iterdir())) == 2


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_config_composes_and_validates(make_cfg, name, tmp_path):
    """Each conf/experiment/*.yaml is a runnable recipe: it composes, passes validation, and builds its model."""
    from pruneexp.models import model_from_config
    from pruneexp.validate import validate

    from recipes import model_overrides

    # a recipe of a Hugging Face model names its files in the cache (SmolLM2, BERT-base, GPT-2): tiny ones stand in
    cfg = make_cfg(f"experiment={name}", *model_overrides(name, tmp_path))
    validate(cfg)
    shape = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "mnist1d": (40,), "digits": (1, 8, 8),
             "markov": (cfg.dataset.block_size,), "text": (cfg.dataset.block_size,),
             "tokens": (cfg.dataset.block_size,), "text_classification": (cfg.dataset.max_length,)}.get(cfg.dataset.name, (3, 32, 32))
    model_from_config(cfg.model, shape, 10)
