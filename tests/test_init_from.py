"""`model.init_from`: start a run from trained weights (a pruneexp level file or a state_dict),
named in the run hash by the file's sha256; a missing, unreadable or ill-fitting file refused
before anything is trained."""

import shutil

import pytest
import torch

from pruneexp.errors import PruneexpError
from pruneexp.runner import run, run_directory

SOURCE = ["schedule=oneshot", "sparsity=0.0", "train.duration=3ep", "schedule.finetune.duration=0it", "quiet=true", "hardware.levels=none"]
TARGET = ["schedule=movement", "sparsity=0.5", "train.duration=2ep", "schedule.end=1ep", "quiet=true", "hardware.levels=none"]


def test_a_run_starts_from_the_weights_of_another_and_is_named_by_their_sha256(make_cfg, tmp_path):
    source = run(make_cfg(*SOURCE))
    weights = source.directory / "levels" / "level_000.pt"
    started = run(make_cfg(*TARGET, f"model.init_from={weights}"))
    init = started.levels[0]  # level 0 of movement: the network as loaded, before any step
    assert init["name"] == "init" and init["test_acc"] == source.levels[0]["test_acc"]
    assert run(make_cfg(*TARGET)).levels[0]["test_acc"] != init["test_acc"]  # without it: drawn weights
    # the identity is the content: a copy elsewhere names the same run, other weights another
    copy = tmp_path / "copy.pt"
    shutil.copy(weights, copy)
    assert run_directory(make_cfg(*TARGET, f"model.init_from={copy}")) == started.directory
    state = torch.load(weights, weights_only=True)["model"]
    torch.save({k: v + 1 for k, v in state.items()}, tmp_path / "other.pt")  # a bare state_dict loads too
    assert run_directory(make_cfg(*TARGET, f"model.init_from={tmp_path / 'other.pt'}")) != started.directory
    assert run(make_cfg(*TARGET, f"model.init_from={tmp_path / 'other.pt'}")).levels[0]["name"] == "init"


def test_a_missing_or_ill_fitting_weights_file_is_refused_before_training(make_cfg, tmp_path):
    with pytest.raises(PruneexpError, match="cannot read the weights file"):
        run(make_cfg(*TARGET, f"model.init_from={tmp_path / 'nothing.pt'}"))
    from pruneexp.models import create_model

    state = create_model("lenet_300_100", (1, 8, 8), 10).state_dict()
    first, last = list(state)[0], list(state)[-1]
    torch.save({**{k: v for k, v in state.items() if k != last}, first: torch.zeros(3, 3)}, tmp_path / "small.pt")
    with pytest.raises(PruneexpError, match="does not fit") as err:
        run(make_cfg(*TARGET, f"model.init_from={tmp_path / 'small.pt'}"))
    assert f"missing: {last}" in str(err.value) and f"{first} (3, 3) vs" in str(err.value)
    (tmp_path / "text.pt").write_text("not weights")
    with pytest.raises(PruneexpError, match="not a weights file"):
        run(make_cfg(*TARGET, f"model.init_from={tmp_path / 'text.pt'}"))
    # nothing was trained: no run got as far as a level
    assert not list((tmp_path / "results").rglob("levels.csv"))
