"""Dynamic sparse training (schedule=dst: SET, RigL) on cases whose answer is known: per-layer
sparsity exactly constant, drop/grow counts following the cosine decay, a grown weight at zero
with zero momentum, RigL growing the connection of largest gradient, SET's sign-separated drop,
and bad combinations refused before training."""

import math

import pytest
import torch
from torch import nn

from test_loop_hooks import sparse_masks
from test_train import cfg, toy_data, toy_model

from pruneexp.errors import PruneexpError
from pruneexp.pruning.masks import MaskSet, live_units
from pruneexp.runner import run, run_directory
from pruneexp.schedules.dst import PRESETS, DynamicSparse
from pruneexp.train import train
from pruneexp.validate import validate


class Recording(DynamicSparse):
    """Records, at each update, whether the grown connections' optimizer state was non-zero before
    and is zero after (masked weights get the dense gradient, so their momentum is not zero)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.reset_seen, self.had_state = [], []

    def update(self, model, step, masks, optimizer, grow_scores):
        params = dict(model.named_parameters())
        before = {n: {k: v.clone() for k, v in optimizer.state[params[n]].items() if torch.is_tensor(v) and v.dim() > 0}
                  for n in masks.weights}
        super().update(model, step, masks, optimizer, grow_scores)
        for name, grown in self.last_grown.items():
            after = [v for v in optimizer.state[params[name]].values() if torch.is_tensor(v) and v.dim() > 0]
            self.reset_seen.append(bool(after) and all((v[grown] == 0).all() for v in after))
            self.had_state.append(any((v[grown] != 0).any() for v in before[name].values()))


def opts(method="rigl", **kw):
    return {**PRESETS[method], "drop_fraction": 0.3, "decay": "cosine", "end": 0.75, "grow_std": 0.1, "reset_optimizer": True, **kw}


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_per_layer_sparsity_is_constant_and_counts_follow_the_cosine_decay(method):
    model, data = toy_model(), toy_data()
    masks = sparse_masks(model, 0.7)
    live = {n: int(masks[n].sum()) for n in masks.weights}
    total, dt = 80, 5  # 8 steps an epoch; T_end = 60: updates at 5, 10, ..., 55
    seen = []

    class Watch(DynamicSparse):
        def update(self, model, step, masks, optimizer, grow_scores):
            super().update(model, step, masks, optimizer, grow_scores)
            seen.append({n: int(masks[n].sum()) for n in masks.weights})

    hook = Watch(opts(method), dt, round(0.75 * total), seed=0)
    train(model, data, masks, cfg(duration=f"{total}it"), seed=0, quiet=True, sparsifier=hook)
    assert [s for s, _, _ in hook.history] == list(range(5, 60, 5))
    assert all(s == live for s in seen)  # exactly constant after every update
    before = sparse_masks(toy_model(), 0.7)
    assert any(not torch.equal(masks[n], before[n]) for n in masks.weights)  # the connectivity moved
    for step, a, counts in hook.history:
        assert a == pytest.approx(0.3 / 2 * (1 + math.cos(math.pi * step / 60)))
        for n, (dropped, grown) in counts.items():
            assert grown == dropped
            if method == "rigl":  # floor(alpha_t * live weights of the layer)
                assert dropped == int(a * live[n])
            else:  # floor of alpha_t of the positive and of the negative live weights, each
                assert abs(dropped - int(a * live[n])) <= 1


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_grown_weight_starts_at_zero_with_zero_optimizer_state(optimizer):
    model, data = toy_model(), toy_data()
    masks = sparse_masks(model, 0.7)
    hook = Recording(opts("rigl"), dt=5, t_end=30, seed=0)
    # stop right after the update step 5 (steps 0..5): RigL's update takes the place of that optimizer step
    train(model, data, masks, cfg(duration="40it", optimizer=optimizer, lr=0.01), seed=0, quiet=True, sparsifier=hook, stop=6)
    assert len(hook.history) == 1
    params = dict(model.named_parameters())
    for name, grown in hook.last_grown.items():
        assert grown.any()
        assert (params[name][grown] == 0).all()
        assert masks[name][grown].all()
    assert hook.reset_seen and all(hook.reset_seen)  # zero optimizer state after the update ...
    assert all(hook.had_state)  # ... where it was not zero before (the dense gradient fed it)


def test_set_grows_at_normal_values_after_the_optimizer_step():
    model, data = toy_model(), toy_data()
    masks = sparse_masks(model, 0.7)
    hook = Recording(opts("set"), dt=5, t_end=30, seed=0)
    train(model, data, masks, cfg(duration="40it"), seed=0, quiet=True, sparsifier=hook, stop=6)
    w = dict(model.named_parameters())["0.weight"].detach()[hook.last_grown["0.weight"]]
    assert (w != 0).all() and 0.03 < float(w.std()) < 0.3  # N(0, 0.1^2), SET's reference code
    assert hook.reset_seen and all(hook.reset_seen)


def test_rigl_grows_the_connection_with_the_largest_dense_gradient():
    """One linear layer, 6 inputs, 1 output, squared error: dL/dw_j = 2 (y_hat - y) x_j, so among
    the dead connections the one with the largest |x_j| has the largest gradient; the live weight of
    smallest magnitude is dropped. alpha = 0.3 of 4 live weights -> one moves."""
    layer = nn.Linear(6, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.4, 0.05, 0.3, 0.0, 0.0]]))
    masks = MaskSet({"weight": torch.tensor([[True, True, True, True, False, False]])})
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.5, 3.0]])
    loss = ((layer(x) - 2.0) ** 2).sum()
    loss.backward()
    grad = layer.weight.grad.clone()
    assert grad[0, 4] != 0 and grad[0, 5] != 0  # the dense gradient: masked (zero) weights have one
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    hook = DynamicSparse(opts("rigl", drop_fraction=0.3, decay="constant", drop_noise=0.0), dt=1, t_end=10, seed=0)
    assert hook.before_step(layer, 1, masks, optimizer) is True  # RigL skips the gradient step
    assert masks["weight"].tolist() == [[True, True, False, True, False, True]]  # drop |0.05|, grow x=3.0
    assert layer.weight[0, 5] == 0 and layer.weight[0, 2] == 0
    assert int(grad.abs()[0, 4:].argmax()) + 4 == 5


def test_set_drops_the_smallest_positive_and_the_largest_negative_separately():
    layer = nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 0.2, 0.3, -0.05, -0.2, -0.3, 0.0, 0.0]]))
    masks = MaskSet({"weight": torch.tensor([[True] * 6 + [False] * 2])})
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    hook = DynamicSparse(opts("set", drop_fraction=0.4, decay="constant", grow_init="zero"), dt=1, t_end=10, seed=0)
    assert hook.before_step(layer, 1, masks, optimizer) is False  # SET takes the gradient step
    hook.after_step(layer, 1, masks, optimizer)
    m = masks["weight"][0].tolist()
    assert m[:6] == [False, True, True, False, True, True]  # +0.1 and -0.05 dropped (floor(0.4 * 3) = 1 each)
    assert sum(m) == 6  # two grown among the dead (the two dropped included)


def test_live_units_counts_what_shrink_would_remove():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    m1 = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)  # hidden 1 has no input
    m2 = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)  # hidden 2 has no output
    masks = MaskSet({"0.weight": m1, "2.weight": m2})
    assert live_units(model, masks) == "2-1-2"  # inputs 0, 1; hidden 0 only; both outputs kept


def test_live_units_counts_conv_channels_through_a_flatten():
    """conv 1->3 channels (2x2 kernel on 3x3: 2x2 maps), flatten (3 blocks of 4 features), linear 12->2.
    Channel 0 feeds nothing (its 4 features all pruned), channel 1 has no live kernel weight,
    channel 2 is live both ways: one channel left, feeding both outputs."""
    model = nn.Sequential(nn.Conv2d(1, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    conv = torch.ones(3, 1, 2, 2, dtype=torch.bool)
    conv[1] = False
    fc = torch.zeros(2, 12, dtype=torch.bool)
    fc[:, 4:12] = True  # channels 1 and 2 feed both outputs, channel 0 nothing
    assert live_units(model, MaskSet({"0.weight": conv, "3.weight": fc})) == "1-1-2"
    fc[:, 8:11] = False  # one feature of channel 2 left, to output 1 only: the channel still lives
    assert live_units(model, MaskSet({"0.weight": conv, "3.weight": fc})) == "1-1-2"
    fc[:, 11] = False  # channel 2 feeds nothing now: no channel, no input left (outputs are always kept)
    assert live_units(model, MaskSet({"0.weight": conv, "3.weight": fc})) == "0-0-2"
    # 12 inputs do not fold into 5 channels: not a chain this counts
    odd = nn.Sequential(nn.Conv2d(1, 5, 2), nn.Flatten(), nn.Linear(12, 2))
    assert live_units(odd, MaskSet({"0.weight": torch.ones(5, 1, 2, 2, dtype=torch.bool),
                                     "2.weight": torch.ones(2, 12, dtype=torch.bool)})) == ""


def test_dst_runs_from_the_command_line_config_and_refuses_bad_combinations(make_cfg):
    for method in ("rigl", "set"):
        directory = run(make_cfg("schedule=dst", f"schedule.method={method}", "criterion=random", "prune.scope=erk",
                                 "train.duration=4ep", "schedule.update_every=4it", "quiet=true", "hardware.levels=none")).directory
        rows = (directory / "levels.csv").read_text().splitlines()
        assert len(rows) == 3 and ",trained,0.9," in rows[2]
    bad = {("criterion=taylor",): "scores a trained network",
           ("criterion=random", "prune.granularity=nm", "prune.n=2", "prune.m=4", "sparsity=0.5"): "granularity=nm",
           ("criterion=random", "prune.granularity=channel"): "granularity=channel",
           ("criterion=random", "prune.scope=global"): "scope=erk",
           ("criterion=random", "schedule.method=sett"): "Unknown schedule.method",
           ("criterion=random", "schedule.grow_init=ones"): "grow_init"}
    for overrides, message in bad.items():
        with pytest.raises(PruneexpError, match=message):
            validate(make_cfg("schedule=dst", "prune.scope=erk", *overrides))


def test_rigl_vs_static_checks_pass_or_say_not_reproduced_with_numbers():
    """The reproduction's verdicts on a hand-made table: the ordering holds at 95 % (PASS) and not
    at 98 % ('not reproduced', numbers shown, CI not failed); a run off its target is a FAIL."""
    import pandas as pd

    from pruneexp.reproduce import REPRODUCTIONS, passed, verdict

    acc = {("rigl", 0.95): 0.97, ("set", 0.95): 0.96, ("static", 0.95): 0.95, ("prune_ft", 0.95): 0.974,
           ("rigl", 0.98): 0.93, ("set", 0.98): 0.94, ("static", 0.98): 0.92, ("prune_ft", 0.98): 0.94}
    name = {"rigl": ("dst", "rigl"), "set": ("dst", "set"), "static": ("at_init", None), "prune_ft": ("oneshot", None)}
    # as the report labels setups: by their config keys (sparsity among them), with no "/" to parse
    rows = [dict(setup=f"method={m}, sparsity={s}", sparsity=s, level=1, name="finetuned" if m == "prune_ft" else "trained",
                 remaining_mean=1 - s, test_acc_mean=a, seeds=3,
                 **{"schedule.name": name[m][0], "schedule.method": name[m][1]}, live_units="408-100-69-10" if m == "rigl" else "")
            for (m, s), a in acc.items()]
    checks = REPRODUCTIONS.get("rigl_vs_static").check(pd.DataFrame(rows))
    by = {c.claim: c for c in checks}
    order95 = by["mnist, 95 % sparsity: RigL >= SET >= static ERK mask (final test acc)"]
    order98 = by["mnist, 98 % sparsity: RigL >= SET >= static ERK mask (final test acc)"]
    assert verdict(order95) == "PASS"
    assert verdict(order98) == "not reproduced" and "RigL 93.00 %, SET 94.00 %, static 92.00 %" in order98.ours
    assert verdict(by["mnist, 95 %: RigL within 0.5 points of one-shot magnitude pruning + fine-tuning"]) == "PASS"
    assert verdict(by["mnist, 98 %: RigL within 0.5 points of one-shot magnitude pruning + fine-tuning"]) == "not reproduced"
    assert verdict(by["every run ends at its target sparsity (ERK, drop = grow per layer)"]) == "PASS"
    assert by["every run ends at its target sparsity (ERK, drop = grow per layer)"].ours == "all 8 setups at target"
    assert passed(checks)  # 'not reproduced' does not fail CI
    rows[0]["remaining_mean"] = 0.06
    off = REPRODUCTIONS.get("rigl_vs_static").check(pd.DataFrame(rows))
    assert not passed(off) and "rigl at 95.00 %: 94.00 %" in off[-3].ours
    # a table without the configured targets cannot show the runs are at them: FAIL, not a silent PASS
    blind = REPRODUCTIONS.get("rigl_vs_static").check(pd.DataFrame(rows).drop(columns="sparsity"))
    assert not passed(blind)


def test_the_loop_hands_before_step_the_dense_gradient_and_skips_the_step_on_request():
    """Masks are re-applied to weights, not gradients: in before_step a masked (zero) weight has a
    gradient; the gradients are still in p.grad in after_step; returning True skips the step."""
    model, data = toy_model(), toy_data()
    masks = sparse_masks(model, 0.7)
    seen = {}

    class Probe(DynamicSparse):
        def before_step(self, model, step, masks, optimizer):
            p = dict(model.named_parameters())["0.weight"]
            if step == 3:
                seen["masked_grad"] = float(p.grad[~masks["0.weight"]].abs().sum())
                seen["masked_weight"] = float(p.detach()[~masks["0.weight"]].abs().sum())
                seen["before"] = p.detach().clone()
                return True
            return False

        def after_step(self, model, step, masks, optimizer):
            if step == 3:
                p = dict(model.named_parameters())["0.weight"]
                seen["grad_kept"] = p.grad is not None
                seen["unchanged"] = torch.equal(p.detach(), seen["before"])

    train(model, data, masks, cfg(duration="8it"), seed=0, quiet=True, sparsifier=Probe(opts(), 100, 100, 0))
    assert seen["masked_weight"] == 0 and seen["masked_grad"] > 0
    assert seen["grad_kept"] and seen["unchanged"]  # step 3's optimizer step was skipped


def test_layer_scaled_init_divides_each_kept_weight_by_the_root_of_its_layer_density():
    """schedule.sparse_init=layer_scaled (the RigL code's layer_scaled_init): w_l / sqrt(d_l) on the
    kept weights, biases untouched; `dense` leaves the masked init as it is."""
    import math

    from torch import nn

    from pruneexp.pruning.masks import MaskSet
    from pruneexp.pruning.sparse_init import scale_for_density

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    keep = {"0.weight": torch.zeros(4, 8, dtype=torch.bool), "2.weight": torch.ones(2, 4, dtype=torch.bool)}
    keep["0.weight"][:, :2] = True  # density 1/4
    masks = MaskSet(keep)
    masks.apply_(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scale_for_density(model, masks, "dense")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    scale_for_density(model, masks, "layer_scaled")
    after = model.state_dict()
    assert torch.allclose(after["0.weight"], before["0.weight"] * 2.0)  # 1 / sqrt(1/4)
    assert torch.equal(after["2.weight"], before["2.weight"])  # dense layer: density 1, unchanged
    assert torch.equal(after["0.bias"], before["0.bias"])
    assert (after["0.weight"][:, 2:] == 0).all() and math.isclose(float(masks["0.weight"].float().mean()), 0.25)


def test_sparse_init_is_hash_neutral_at_dense_and_checked(make_cfg):
    base = ["schedule=dst", "criterion=random", "prune.scope=erk", "sparsity=0.9"]
    assert run_directory(make_cfg(*base)) == run_directory(make_cfg(*base, "schedule.sparse_init=dense"))
    assert run_directory(make_cfg(*base)) != run_directory(make_cfg(*base, "schedule.sparse_init=layer_scaled"))
    with pytest.raises(PruneexpError, match="sparse_init"):
        validate(make_cfg(*base, "schedule.sparse_init=fanin"))
