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


# Hashes of finished runs recorded before each method owned its config schema: they must not move,
# or users' finished runs (and results/reproductions) would be recomputed under new names. Those
# runs were trained with the foreach optimizer (the default then; fused is the default now and,
# rounding differently, names other runs), so each is composed with train.optimizer_impl=foreach.
PINNED = [
    ([], "default/69d6745513df"),
    (["experiment=lth_lenet"], "lth_lenet/a199debfbc73"),
    (["experiment=lth_lenet", "schedule.retrain=reinit"], "lth_lenet/744744fafdb6"),
    (["experiment=mnist1d_lottery"], "mnist1d_lottery/4b96649c73a1"),
    (["schedule=gmp"], "default/9a5cd57caa20"),
    (["schedule=at_init", "criterion=synflow"], "default/1d097320c59f"),
    (["criterion=obd", "criterion.probes=16"], "default/8eabe5c57e32"),
    (["criterion=taylor", "criterion.variant=activation", "prune.granularity=channel"], "default/dee3abe431d0"),
    (["model=mlp", "model.widths=[64,32]"], "default/04ff02e58f23"),
    (["experiment=renda_rewinding"], "renda_rewinding/fa998e50b575"),
    (["experiment=mnist1d_lottery_notebook"], "mnist1d_lottery_notebook/abbebce63f26"),
]


def test_existing_run_hashes_are_pinned(make_cfg, tmp_path):
    from pruneexp.runner import run_directory
    from pruneexp.validate import typed_config

    for overrides, expected in PINNED:
        cfg = make_cfg(*overrides, "train.optimizer_impl=foreach")
        assert str(run_directory(cfg).relative_to(tmp_path / "results")) == expected, overrides
        assert run_directory(typed_config(cfg)) == run_directory(cfg)  # typing the config changes nothing


def test_only_the_chosen_methods_options_exist(make_cfg):
    import pytest
    from hydra.errors import ConfigCompositionException

    from pruneexp.errors import PruneexpError
    from pruneexp.validate import typed_config

    with pytest.raises(ConfigCompositionException):
        make_cfg("criterion=magnitude", "criterion.probes=16")  # magnitude has no probes
    assert make_cfg("criterion=obd", "criterion.probes=16").criterion.probes == 16
    assert typed_config(make_cfg("criterion.name=obd")).criterion.probes == 8  # a name-only switch takes obd's defaults
    with pytest.raises(PruneexpError, match="has no option probes"):
        typed_config(make_cfg("criterion=obd", "criterion.name=magnitude"))


def test_comparable_view_fills_a_key_only_where_the_method_has_it():
    """Reports read a key a run predates at its neutral value, but only for methods that have the key:
    a group-lasso run is not labelled with L0's `ema`, a one-shot run not with RigL's `sparse_init`."""
    from pruneexp.conf_store import comparable_view

    old = {"regularizer": {"name": "l0", "strength": 0.1}, "schedule": {"name": "dst"}, "train": {"lr": 0.1}}
    view = comparable_view(old)
    assert view["regularizer"]["ema"] == 0.0 and view["schedule"]["sparse_init"] == "dense"
    assert view["train"]["optimizer_impl"] == "foreach"  # not a method group: every run has it
    other = comparable_view({"regularizer": {"name": "group_lasso", "strength": 0.1}, "schedule": {"name": "oneshot"}})
    assert "ema" not in other["regularizer"] and "train_clip_variance" not in other["regularizer"]
    assert "sparse_init" not in other["schedule"] and "rounds" not in other["schedule"]
    assert "sparse_init" in comparable_view({"schedule": {"name": "at_init"}})["schedule"]
    assert comparable_view({"regularizer": {"name": "none", "strength": 0.0}})["regularizer"] == {"name": "none"}
    assert comparable_view({"train": {"lr": 0.1}})["regularizer"] == {"name": "none"}  # a run that predates the group
