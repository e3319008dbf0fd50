"""The seed table's recipes (conf/experiment/: BERT-base on SST-2 by GMP, GPT-2 by SparseGPT,
ResNet-20 and VGG-16 on CIFAR-10 by IMP with rewinding) compose through the project's own config
loading and run end to end for two training steps on stand-ins (tests/recipes.py), so a recipe
that no longer fits the code fails here, not on the cluster."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[hf]')")

from recipes import SEED_TABLE, standin_overrides  # noqa: E402
from pruneexp.runner import run  # noqa: E402


@pytest.mark.parametrize("name", SEED_TABLE)
def test_seed_table_recipe_runs_two_steps_on_a_stand_in(make_cfg, tmp_path, name):
    recipe = make_cfg(f"experiment={name}")
    cfg = make_cfg(f"experiment={name}", *standin_overrides(name, tmp_path))
    # the stand-ins replace data, model files and durations, never the method
    for key in ("schedule.name", "criterion.name", "prune.scope", "prune.exclude", "train.optimizer", "train.lr", "sparsity"):
        assert str(cfg[key.split(".")[0]][key.split(".")[1]] if "." in key else cfg[key]) == str(
            recipe[key.split(".")[0]][key.split(".")[1]] if "." in key else recipe[key]), key
    out = run(cfg)
    assert json.loads((out.directory / "summary.json").read_text())["status"] == "complete"
    levels = pd.read_csv(out.directory / "levels.csv")
    assert out.directory.parent.name == name and levels["sparsity"].iloc[-1] > 0
    if cfg.schedule.name == "posttrain":
        assert levels["test_ppl"].notna().all()  # no training: the weights as loaded, pruned
        return
    log = pd.read_csv(out.directory / "train_log.csv")
    assert log.groupby(["level", "phase"])["step"].max().max() == 2  # two training steps per training phase
