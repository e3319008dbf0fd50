"""Runs are named by a hash of the hyperparameters that change results, and of nothing else."""

from omegaconf import OmegaConf

from pruneexp.config import NON_RESULT_KEYS
from pruneexp.results import run_hash


def leaves(tree, prefix=""):
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from leaves(v, key + ".")
        else:
            yield key, v


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return value + [value[-1] if value else 1]
    if value is None:
        return 1
    return f"{value}_other"


def test_hash_ignores_output_paths_and_display(make_cfg):
    a = OmegaConf.to_container(make_cfg(), resolve=True)
    b = OmegaConf.to_container(make_cfg("results_dir=/elsewhere", "quiet=true", "dataset.root=/data/x",
                                        "dataset.cache_dir=/c", "dataset.download=false"), resolve=True)
    assert run_hash(a, NON_RESULT_KEYS) == run_hash(b, NON_RESULT_KEYS)
    # experiment trackers do not change results either
    c = OmegaConf.to_container(make_cfg("logger=[csv,tensorboard,mlflow,wandb]"), resolve=True)
    assert c["logger"]["mlflow"] is not None and run_hash(a, NON_RESULT_KEYS) == run_hash(c, NON_RESULT_KEYS)


def test_hash_changes_with_every_hyperparameter(make_cfg):
    base = OmegaConf.to_container(make_cfg("+prune.layer_rates={fc: 0.5}"), resolve=True)
    reference = run_hash(base, NON_RESULT_KEYS)
    checked = 0
    for key, value in leaves(base):
        if key in NON_RESULT_KEYS or any(key.startswith(k + ".") for k in NON_RESULT_KEYS):
            continue
        tree = OmegaConf.create(base)
        OmegaConf.update(tree, key, changed(value), merge=False)
        assert run_hash(OmegaConf.to_container(tree), NON_RESULT_KEYS) != reference, key
        checked += 1
    assert checked > 40  # every leaf of every group was tried
