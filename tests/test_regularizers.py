"""Penalties (`regularizer=`): closed-form proximal steps, refusal of bad combinations, the run hash
unchanged without a regularizer, and `schedule=regularized` end to end on digits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pruneexp.errors import PruneexpError
from pruneexp.regularizers import REGULARIZERS
from pruneexp.regularizers.base import PenaltySparsifier, group_soft_threshold, make_groups, soft_threshold


class Cfg(dict):
    __getattr__ = dict.__getitem__


def test_soft_threshold_closed_form():
    w = torch.tensor([-3.0, -0.5, 0.0, 0.2, 0.7, 2.0])
    out = soft_threshold(w, 0.5)
    assert torch.allclose(out, torch.tensor([-2.5, 0.0, 0.0, 0.0, 0.2, 1.5]))
    assert (out[1:4] == 0).all()  # exact zeros


def test_group_soft_threshold_closed_form():
    # rows of length 4 (sqrt p = 2); norms 5 (3,4,0,0) and 0.5 (0.3,0.4,0,0)
    rows = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.3, 0.4, 0.0, 0.0]])
    out = group_soft_threshold(rows, 0.5)  # t sqrt(p) = 1: row 1 scaled by 1 - 1/5, row 2 (norm 0.5 < 1) zeroed
    assert torch.allclose(out, torch.tensor([[2.4, 3.2, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))


def _layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.1, -0.2, 0.05], [-1.0, 0.5, 2.0], [0.0, 0.0, 0.3]]))
        model[0].bias.copy_(torch.tensor([0.0, 0.1, -0.5, 0.0]))
    prunable = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    return model, prunable


@pytest.mark.parametrize("name", ["l1", "l2", "elastic_net", "group_lasso", "sparse_group_lasso"])
def test_proximal_step_matches_closed_form(name):
    """One prox step of each registered penalty on a constructed layer equals the formula."""
    model, prunable = _layer()
    lam, eta, a = 0.5, 0.4, 0.3
    t = lam * eta
    cfg = Cfg(strength=lam, l1_ratio=a)
    pen = REGULARIZERS.get(name)(cfg)
    groups = make_groups(model, prunable, pen.grouped, frozen=("2.weight",))
    w0, b0 = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    with torch.no_grad():
        pen.prox_(groups, eta)
    w, b = model[0].weight.detach(), model[0].bias.detach()

    def gst(rows, tt):  # explicit per-row formula, sqrt p_g with p_g = 3 weights + 1 bias
        out = []
        for r in rows:
            n = float(r.norm())
            out.append(r * max(0.0, 1.0 - tt * math.sqrt(4) / n) if n > 0 else r)
        return torch.stack(out)

    if name == "l1":
        exp_w = torch.sign(w0) * torch.clamp(w0.abs() - t, min=0)
        exp_b = b0
    elif name == "l2":
        exp_w, exp_b = w0 / (1 + t), b0
    elif name == "elastic_net":
        exp_w, exp_b = torch.sign(w0) * torch.clamp(w0.abs() - t * a, min=0) / (1 + t * (1 - a)), b0
    else:
        st = torch.sign(w0) * torch.clamp(w0.abs() - t * a, min=0) if name == "sparse_group_lasso" else w0
        rows = gst(torch.cat([st, b0[:, None]], 1), t * (1 - a) if name == "sparse_group_lasso" else t)
        exp_w, exp_b = rows[:, :3], rows[:, 3]
    assert torch.allclose(w, exp_w, atol=1e-6), (w, exp_w)
    assert torch.allclose(b, exp_b, atol=1e-6)
    if name in ("group_lasso", "sparse_group_lasso"):
        assert torch.equal(w[1], torch.zeros(3)) and float(b[1]) == 0.0  # the small unit is exactly zero
        # the classifier is not grouped: group lasso leaves it alone
        if name == "group_lasso":
            assert not groups[1].grouped


def test_threshold_masks_units():
    model, prunable = _layer()
    from pruneexp.pruning.masks import MaskSet

    pen = REGULARIZERS.get("group_lasso")(Cfg(strength=0.5))
    sp = PenaltySparsifier(pen, make_groups(model, prunable, True, frozen=("2.weight",)), "proximal")
    masks = sp.threshold_masks(MaskSet.dense(prunable), threshold=0.35)  # unit 1 norm ~0.25, unit 3 norm 0.3
    assert masks["0.weight"].any(1).tolist() == [True, False, True, False]
    assert masks["2.weight"].all()


def test_subgradient_penalty_value():
    model, prunable = _layer()
    pen = REGULARIZERS.get("l1")(Cfg(strength=0.1))
    sp = PenaltySparsifier(pen, make_groups(model, prunable, False), "subgradient")
    expected = 0.1 * sum(float(p.detach().abs().sum()) for p in prunable.values())
    assert math.isclose(float(sp.penalty(model, 0).detach()), expected, rel_tol=1e-6)
    assert PenaltySparsifier(pen, sp.groups, "proximal").penalty(model, 0) is None


@pytest.mark.parametrize("overrides,match", [
    (["schedule=regularized", "regularizer=group_lasso", "prune.granularity=weight"], "prune.granularity=channel"),
    (["schedule=regularized", "regularizer=sparse_group_lasso"], "prune.granularity=channel"),
    (["schedule=regularized", "regularizer=l1", "prune.granularity=channel"], "prune.granularity=weight"),
    (["schedule=oneshot", "regularizer=l1"], "schedule=regularized"),
    (["schedule=regularized", "regularizer=l1", "regularizer.update=prox"], "regularizer.update"),
    (["schedule=regularized", "regularizer=l1", "regularizer.target_sparsity=1.5"], "target_sparsity"),
    (["schedule=regularized", "regularizer=elastic_net", "regularizer.l1_ratio=2"], "l1_ratio"),
    (["schedule=regularized", "regularizer=sparse_vd", "regularizer.train_clip_variance=dense"], "train_clip_variance"),
])
def test_bad_combinations_refused(make_cfg, overrides, match):
    from pruneexp.validate import validate

    with pytest.raises(PruneexpError, match=match):
        validate(make_cfg(*overrides))


def test_no_regularizer_leaves_the_hash(make_cfg):
    from pruneexp.config import hash_view
    from omegaconf import OmegaConf

    cfg = make_cfg()
    assert "regularizer" not in hash_view(OmegaConf.to_container(cfg, resolve=True))
    reg = make_cfg("schedule=regularized", "regularizer=l1")
    assert hash_view(OmegaConf.to_container(reg, resolve=True))["regularizer"]["name"] == "l1"


@pytest.mark.parametrize("reg,gran,update,lam", [("l1", "weight", "proximal", 0.002), ("group_lasso", "channel", "proximal", 0.05),
                                                 ("sparse_group_lasso", "channel", "subgradient", 0.05)])
def test_regularized_schedule_runs(make_cfg, reg, gran, update, lam):
    import csv

    from pruneexp.runner import run

    out = run(make_cfg("schedule=regularized", f"regularizer={reg}", f"prune.granularity={gran}", f"regularizer.update={update}",
                       f"regularizer.strength={lam}", "regularizer.threshold=0.01", "regularizer.target_sparsity=0.5",
                       "schedule.finetune.duration=2ep", "train.duration=5ep", "quiet=true", "hardware.levels=none"))
    names = [r["name"] for r in out.levels]
    assert names == ["regularized", "target", "finetuned"]
    assert out.levels[0]["sparsity"] > 0  # the penalty alone zeroed something
    assert out.levels[1]["sparsity"] >= 0.5 - 1e-3 or gran == "channel"
    log = list(csv.DictReader(open(out.directory / "train_log.csv")))
    assert all(r["reg_strength"] != "" for r in log if r["phase"] == "regularized")
