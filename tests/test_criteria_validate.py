"""Every criterion x granularity pair is accepted or refused before any training, by name."""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import TINY
from pruneexp.errors import PruneexpError
from pruneexp.pruning.criteria import CRITERIA
from pruneexp.pruning.groups import GRANULARITIES
from pruneexp.runner import run
from pruneexp.validate import UnsupportedPair, validate

VARIANTS = [(c, None) for c in CRITERIA] + [("taylor", "activation")]
ALL = ("weight", "channel", "nm", "block")
# What each criterion can score, written from its definition (not read back from the registry):
# element scores reduce to any group; unit statistics (activations, BatchNorm scales, filter
# geometry) exist per unit only; OBS, LAMP and Wanda correct or normalise individual weights.
EXPECTED = {
    "magnitude": ALL, "random": ALL, "taylor": ALL, "taylor2": ALL, "obd": ALL, "snip": ALL, "grasp": ALL, "synflow": ALL,
    "norm": ("channel", "block"), "obs": ("weight", "nm", "block"), "lamp": ("weight", "nm"), "wanda": ("weight", "nm"),
    "sparsegpt": ("weight", "nm"),
    "bn_scale": ("channel",), "activation": ("channel",), "apoz": ("channel",), "entropy": ("channel",),
    "correlation": ("channel",), "lda": ("channel",), "cosine": ("channel",), "fpgm": ("channel",),
    ("taylor", "activation"): ("channel",),
}


def test_every_pair_is_accepted_or_refused_with_the_supported_ones_named(make_cfg):
    refused = accepted = 0
    for criterion, variant in VARIANTS:
        base = make_cfg(f"criterion={criterion}", *([f"criterion.variant={variant}"] if variant else []))
        for gran in GRANULARITIES:
            # sparsegpt chooses its mask per layer: it is asked under layerwise scope (refused under global below)
            scope = {"scope": "layerwise"} if criterion == "sparsegpt" else {}
            cfg = OmegaConf.merge(base, {"prune": {"granularity": gran, **scope}, "sparsity": 0.5})
            can = EXPECTED[(criterion, variant) if variant else criterion]
            if gran in can:
                validate(cfg)
                accepted += 1
            else:
                with pytest.raises(UnsupportedPair) as err:
                    validate(cfg)
                message = str(err.value)
                assert criterion in message and gran in message and "supports: " + ", ".join(can) in message
                refused += 1
    assert refused and accepted and refused + accepted == len(VARIANTS) * len(GRANULARITIES)
    assert set(EXPECTED) - {("taylor", "activation")} == set(CRITERIA)  # every registered criterion has its row here
    with pytest.raises(PruneexpError, match="prune.scope in layerwise"):
        validate(OmegaConf.merge(make_cfg("criterion=sparsegpt"), {"prune": {"scope": "global"}, "sparsity": 0.5}))


def test_granularity_settings_are_checked(make_cfg):
    with pytest.raises(PruneexpError, match="1 - N/M"):
        validate(make_cfg("prune.granularity=nm", "sparsity=0.9"))
    validate(make_cfg("prune.granularity=nm", "sparsity=0.5"))
    validate(make_cfg("prune.granularity=nm", "sparsity=0.5", "schedule=at_init"))
    for schedule in ("imp", "gmp"):  # they raise the sparsity level by level; an N:M mask has one
        with pytest.raises(PruneexpError, match=f"schedule={schedule} raises the sparsity"):
            validate(make_cfg("prune.granularity=nm", "sparsity=0.5", f"schedule={schedule}"))
    with pytest.raises(PruneexpError, match="group_reduce"):
        validate(make_cfg("prune.group_reduce=max"))
    with pytest.raises(PruneexpError, match="layerwise"):
        validate(make_cfg("prune.scope=erk", "+prune.layer_rates={fc: 0.5}"))


def test_an_unsupported_pair_fails_before_training_or_is_skipped_in_a_sweep(make_cfg, tmp_path):
    with pytest.raises(UnsupportedPair, match="supports: channel"):
        run(make_cfg(*TINY, "criterion=apoz", "prune.granularity=weight"))
    out = run(make_cfg(*TINY, "criterion=apoz", "prune.granularity=weight", "skip_unsupported=true"))
    assert out.levels == [] and not (tmp_path / "results" / "pretrained").exists()  # nothing trained


def test_channel_run_keeps_the_classifier_and_masks_pruned_units_bias(make_cfg):
    out = run(make_cfg(*TINY, "train.duration=3ep", "schedule.finetune.duration=1ep", "criterion=taylor",
                       "prune.granularity=channel", "sparsity=0.5"))
    state = torch.load(out.directory / "levels/level_001.pt", weights_only=True)
    masks = state["masks"]["masks"]
    assert masks["layers.5.weight"].all() and "layers.5.bias" not in masks  # the classifier keeps its outputs
    for layer in ("layers.1", "layers.3"):
        alive = masks[f"{layer}.weight"].any(1)
        assert (masks[f"{layer}.weight"].all(1) == alive).all()  # whole units
        assert torch.equal(masks[f"{layer}.bias"], alive)
        assert (state["model"][f"{layer}.bias"][~alive] == 0).all()
    hidden = sum(int(masks[f"{layer}.weight"].any(1).sum()) for layer in ("layers.1", "layers.3"))
    assert hidden == 200  # half of the 300 + 100 hidden units


@pytest.mark.parametrize("override, message", [
    ("criterion.variant=hutchinsn", "it takes: fisher, hutchinson"),
    ("criterion.source=weight", "it takes: activations, weights"),
])
def test_a_misspelt_criterion_option_is_refused(make_cfg, override, message):
    from pruneexp.errors import PruneexpError
    from pruneexp.validate import validate

    criterion = "obd" if "variant" in override else "entropy"
    granularity = "weight" if criterion == "obd" else "channel"
    with pytest.raises(PruneexpError, match=message):
        validate(make_cfg(f"criterion={criterion}", f"prune.granularity={granularity}", override))
    validate(make_cfg(f"criterion={criterion}", f"prune.granularity={granularity}"))  # the defaults pass
    validate(make_cfg(f"criterion.name={criterion}", f"prune.granularity={granularity}"))  # so does name only
