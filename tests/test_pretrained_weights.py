"""`model.weights`: start a run from trained weights (a pruneexp level file or a state_dict),
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
    started = run(make_cfg(*TARGET, f"model.weights={weights}"))
    init = started.levels[0]  # level 0 of movement: the network as loaded, before any step
    assert init["name"] == "init" and init["test_acc"] == source.levels[0]["test_acc"]
    assert run(make_cfg(*TARGET)).levels[0]["test_acc"] != init["test_acc"]  # without it: drawn weights
    # the identity is the content: a copy elsewhere names the same run, other weights another
    copy = tmp_path / "copy.pt"
    shutil.copy(weights, copy)
    assert run_directory(make_cfg(*TARGET, f"model.weights={copy}")) == started.directory
    state = torch.load(weights, weights_only=True)["model"]
    torch.save({k: v + 1 for k, v in state.items()}, tmp_path / "other.pt")  # a bare state_dict loads too
    assert run_directory(make_cfg(*TARGET, f"model.weights={tmp_path / 'other.pt'}")) != started.directory
    assert run(make_cfg(*TARGET, f"model.weights={tmp_path / 'other.pt'}")).levels[0]["name"] == "init"


def test_a_missing_or_ill_fitting_weights_file_is_refused_before_training(make_cfg, tmp_path):
    with pytest.raises(PruneexpError, match="cannot read the weights file"):
        run(make_cfg(*TARGET, f"model.weights={tmp_path / 'nothing.pt'}"))
    from pruneexp.models import create_model

    state = create_model("lenet_300_100", (1, 8, 8), 10).state_dict()
    first, last = list(state)[0], list(state)[-1]
    torch.save({**{k: v for k, v in state.items() if k != last}, first: torch.zeros(3, 3)}, tmp_path / "small.pt")
    with pytest.raises(PruneexpError, match="does not fit") as err:
        run(make_cfg(*TARGET, f"model.weights={tmp_path / 'small.pt'}"))
    assert f"missing: {last}" in str(err.value) and f"{first} (3, 3) vs" in str(err.value)
    (tmp_path / "text.pt").write_text("not weights")
    with pytest.raises(PruneexpError, match="not a weights file"):
        run(make_cfg(*TARGET, f"model.weights={tmp_path / 'text.pt'}"))
    # nothing was trained: no run got as far as a level
    assert not list((tmp_path / "results").rglob("levels.csv"))


def perturbed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with every float tensor moved off the values any seeded initialisation draws."""
    g = torch.Generator().manual_seed(7)
    return {k: v + torch.randn(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v for k, v in state.items()}


def tiny_llama(tmp_path) -> tuple[list[str], dict[str, torch.Tensor]]:
    pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[hf]')")
    from hf_models import save_tiny
    from transformers import AutoModelForCausalLM

    path = save_tiny(tmp_path / "tiny", "llama")
    overrides = ["dataset=tokens", "dataset.block_size=16", "dataset.nsamples=8", "model=hf", f"model.path={path}",
                 "schedule=posttrain", "schedule.train_dense=false", "prune.scope=layerwise", "sparsity=0.5",
                 "criterion.batches=1", "criterion.batch_size=8", "hardware.threads=1"]
    return overrides, AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True).state_dict()  # transformers' keys


def torchvision_model(tmp_path):
    import torchvision

    overrides = ["dataset=synthetic", "dataset.shape=[3,32,32]", "dataset.train_size=64", "dataset.val_size=16",
                 "dataset.test_size=16", "model=torchvision", "model.name=resnet18", *AT_INIT]
    return overrides, torchvision.models.resnet18(num_classes=10).state_dict()  # what torchvision's own checkpoints hold


def vit(tmp_path):
    from pruneexp.models import create_model

    overrides = ["dataset=synthetic", "dataset.shape=[1,28,28]", "dataset.train_size=64", "dataset.val_size=16",
                 "dataset.test_size=16", "model=vit", *AT_INIT]
    return overrides, create_model("vit", (1, 28, 28), 10).state_dict()


AT_INIT = ["schedule=at_init", "criterion=random", "sparsity=0.5", "train.duration=1it", "train.batch_size=16", "hardware=cpu_1thread"]
FAMILIES = {"torchvision": torchvision_model, "vit": vit, "hf": tiny_llama}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_model_family_starts_from_the_file_exactly_and_refuses_one_that_does_not_fit(family, make_cfg, tmp_path):
    overrides, state = FAMILIES[family](tmp_path)
    overrides = [*overrides, "hardware.levels=none", "quiet=true"]
    torch.save(perturbed(state), tmp_path / "weights.pt")
    out = run(make_cfg(*overrides, f"model.weights={tmp_path / 'weights.pt'}"))
    start = torch.load(out.directory / "levels" / "level_000.pt", weights_only=True)["model"]  # level 0: before any pruning
    wanted = perturbed(state)
    prefix = "model." if family == "hf" else ""  # transformers' keys, read into pruneexp's wrapper
    assert set(start) == {prefix + k for k in wanted} and all(torch.equal(start[prefix + k], v) for k, v in wanted.items())
    # a file of another shape (the classifier of 100 classes, a wider embedding) is refused before training, naming it
    key = next(k for k in reversed(list(state)) if state[k].dim() == 2)
    torch.save({**state, key: torch.zeros(state[key].shape[0] + 1, state[key].shape[1])}, tmp_path / "wrong.pt")
    with pytest.raises(PruneexpError, match="does not fit") as err:
        run(make_cfg(*overrides, f"model.weights={tmp_path / 'wrong.pt'}", f"results_dir={tmp_path / 'wrong'}"))
    assert key in str(err.value)
    assert not list((tmp_path / "wrong").rglob("levels.csv"))
