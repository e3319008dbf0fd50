"""L0 hard-concrete gates (regularizer=l0): closed-form P(gate != 0) against Monte Carlo, the folded
model equal to the gated one in deterministic mode, runs at each gate granularity."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from pruneexp.pruning.masks import MaskSet
from pruneexp.regularizers.l0 import L0, L0Config, prob_nonzero, sample_gates


@pytest.mark.parametrize("log_alpha", [-3.0, -1.0, 0.0, 1.0, 3.0])
def test_prob_nonzero_matches_monte_carlo(log_alpha):
    g = torch.Generator().manual_seed(0)
    n = 400_000
    z = sample_gates(torch.full((n,), log_alpha, dtype=torch.float64), generator=g)
    mc = float((z != 0).double().mean())
    exact = float(prob_nonzero(torch.tensor(log_alpha, dtype=torch.float64)))
    se = (exact * (1 - exact) / n) ** 0.5
    assert abs(mc - exact) < 5 * se + 1e-4, (mc, exact)
    assert 0 < float((z == 1).double().mean())  # mass at exactly 1 too (the stretch)


@pytest.mark.parametrize("gates", ["weight", "channel", "input"])
def test_folded_equals_gated_in_eval(gates):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    prunable = {"0.weight": model[0].weight, "2.weight": model[2].weight}
    l0 = L0(OmegaConf.structured(L0Config(name="l0", granularity=gates)))
    l0.wrap(model, prunable, n_train=100, frozen=("2.weight",) if gates == "channel" else ())
    with torch.no_grad():
        for layer in l0.layers.values():
            # closed (-5), open (5) and in between (0.5: a gate value in (0, 1) that the fold multiplies in)
            pattern = torch.tensor([-5.0, 5.0, 0.5]).repeat(layer.log_alpha.numel())[: layer.log_alpha.numel()]
            layer.log_alpha.copy_(pattern.reshape(layer.log_alpha.shape))
    x = torch.randn(16, 6)
    model.eval()
    gated = model(x)
    masks = l0.fold(model, MaskSet.dense(prunable))
    assert isinstance(model[0], nn.Linear)
    assert torch.allclose(model(x), gated, atol=1e-6)
    assert not masks["0.weight"].all() and masks["0.weight"].any()


@pytest.mark.parametrize("gates", ["weight", "channel", "input"])
def test_penalty_is_the_expected_number_of_open_weights_with_reweighted_l2(gates):
    """The authors' L0Dense._reg_w under L0MLP (prior precision N wd):
    Σ_j P(z_j on) Σ_{i in j} (λ / N + ½ wd w_i²) + ½ wd Σ b²."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    prunable = {"0.weight": model[0].weight}
    lam, wd, n = 0.3, 0.02, 50
    l0 = L0(OmegaConf.structured(L0Config(name="l0", granularity=gates, strength=lam, l2=wd)))
    l0.wrap(model, prunable, n_train=n)
    layer = l0.layers["0.weight"]
    with torch.no_grad():
        layer.log_alpha.copy_(torch.randn(layer.log_alpha.shape))
    w, b, p = layer.weight.detach(), layer.bias.detach(), prob_nonzero(layer.log_alpha.detach())
    gate = {"weight": lambda i, j: p[i, j], "channel": lambda i, j: p[i], "input": lambda i, j: p[j]}[gates]
    expected = 0.0
    for i in range(3):  # output row i
        for j in range(4):  # input column j
            expected += float(gate(i, j)) * (lam / n + 0.5 * wd * float(w[i, j]) ** 2)
    expected += 0.5 * wd * float(b.square().sum())
    assert float(l0.penalty(model, 0).detach()) == pytest.approx(expected, rel=1e-5)
    assert float(l0.expected_l0().detach()) == pytest.approx(float(sum(gate(i, j) for i in range(3) for j in range(4))), rel=1e-5)
    with torch.no_grad():
        layer.log_alpha.fill_(9.0)
    l0.after_step(model, 0, None, None)  # the authors' constrain_parameters: log α within [log 0.01, log 100]
    assert torch.allclose(layer.log_alpha, torch.full_like(layer.log_alpha, float(torch.log(torch.tensor(100.0)))))


def test_first_layer_gates_start_at_their_own_drop_rate():
    """The authors' L0MLP: input-layer gates start closed with probability 0.2, the others 0.5."""
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    prunable = {"0.weight": model[0].weight, "2.weight": model[2].weight}
    l0 = L0(OmegaConf.structured(L0Config(name="l0", granularity="input", init_drop=0.5, init_drop_first=0.2)))
    l0.wrap(model, prunable, n_train=10)
    assert torch.allclose(l0.layers["0.weight"].log_alpha, torch.full((6,), math.log(0.8 / 0.2)))
    assert torch.allclose(l0.layers["2.weight"].log_alpha, torch.zeros(8))


@pytest.mark.parametrize("gates,gran", [("weight", "weight"), ("channel", "channel"), ("input", "weight")])
def test_l0_runs(make_cfg, gates, gran):
    """A short run at each gate granularity: the expected L0 falls, the folded level is measured.
    (Closing gates under the test-time rule, log α < −2.4, takes far longer training than a test.)"""
    import csv

    from pruneexp.runner import run

    out = run(make_cfg("schedule=regularized", "regularizer=l0", f"regularizer.granularity={gates}", f"prune.granularity={gran}",
                       "regularizer.strength=1", "train.duration=5ep", "train.optimizer=adam", "train.lr=0.01",
                       "train.lr_schedule=constant", "train.weight_decay=0", "quiet=true", "hardware.levels=none"))
    assert [r["name"] for r in out.levels] == ["regularized"] and out.levels[0]["test_acc"] > 0.5
    l0 = [float(r["expected_l0"]) for r in csv.DictReader(open(out.directory / "train_log.csv"))]
    assert all(0 < v for v in l0)
    if gates != "input":  # 464 input gates at λ = 1: the task loss may open them more than the penalty closes them
        assert l0[-1] < l0[0]


def test_l0_gate_granularity_mismatch_refused(make_cfg):
    from pruneexp.errors import PruneexpError
    from pruneexp.validate import validate

    with pytest.raises(PruneexpError, match="prune.granularity=channel"):
        validate(make_cfg("schedule=regularized", "regularizer=l0", "regularizer.granularity=channel"))


def test_ema_of_the_parameters_is_what_folds():
    """regularizer.ema = β: p̄ ← β p̄ + (1 − β) p after each step, from the initial parameters (the
    authors' update_ema), and the fold uses p̄; β = 0 (the default) folds the final parameters."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    prunable = {"0.weight": model[0].weight}
    l0 = L0(OmegaConf.structured(L0Config(name="l0", granularity="input", ema=0.5)))
    l0.wrap(model, prunable, n_train=10)
    layer = l0.layers["0.weight"]
    w0 = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.add_(1.0)
    l0.after_step(model, 0, None, None)
    with torch.no_grad():
        layer.weight.add_(1.0)
    l0.after_step(model, 1, None, None)  # p̄ = 0.5 (0.5 w0 + 0.5 (w0 + 1)) + 0.5 (w0 + 2) = w0 + 1.25
    with torch.no_grad():  # the final gates wide open (ẑ = 1); their average is log α = 0 (init_drop 0.5): ẑ = 0.5
        layer.log_alpha.fill_(4.0)
    l0.fold(model, MaskSet.dense(prunable))
    assert torch.allclose(model[0].weight, (w0 + 1.25) * 0.5)
    assert l0.average == []
    off = L0(OmegaConf.structured(L0Config(name="l0", granularity="input")))
    model = nn.Sequential(nn.Linear(4, 3))
    off.wrap(model, {"0.weight": model[0].weight}, n_train=10)
    assert off.average == []


def test_ema_default_is_hash_neutral(make_cfg):
    from pruneexp.runner import run_directory

    base = ("schedule=regularized", "regularizer=l0")
    assert run_directory(make_cfg(*base)) == run_directory(make_cfg(*base, "regularizer.ema=0.0"))
    assert run_directory(make_cfg(*base)) != run_directory(make_cfg(*base, "regularizer.ema=0.999"))
