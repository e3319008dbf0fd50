"""The options that run Greydanus's MNIST-1D lottery-ticket notebook exactly: biases pruned with
their weights, a fixed batch order, no validation split, linear rounds, the mask taken at a given
step (conf/experiment/mnist1d_lottery_exact.yaml). Constructed cases with known answers."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from pruneexp.config import PruneConfig
from pruneexp.data import DataSplits
from pruneexp.errors import PruneexpError
from pruneexp.pruning.biases import join, joint_masks, layer_biases, split
from pruneexp.pruning.masks import MaskSet
from pruneexp.report import aggregate, load_levels, table_cells
from pruneexp.runner import run
from pruneexp.schedules.imp import random_masks
from pruneexp.train import train
from pruneexp.train.loop import batch_order
from pruneexp.train.task import TASKS

# digits, 4 epochs of 8 steps, layerwise: small enough for a second per run
IMP = ["schedule=imp", "schedule.levels=3", "train.duration=4ep", "quiet=true", "prune.scope=layerwise", "hardware.threads=1",
       "hardware.levels=none"]


def test_bias_pruning_ranks_a_layers_weights_and_bias_together():
    """A layer at 50 % keeps the 4 largest |entries| of its 6 weights and 2 biases together; here 3
    of them are weights and 1 a bias, which a weights-only selection could not give."""
    from pruneexp.pruning.step import prune_step
    from omegaconf import OmegaConf

    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 5.0, 0.2], [4.0, 0.3, 3.0]]))
        layer.bias.copy_(torch.tensor([6.0, 0.05]))
    model = nn.Sequential(layer)
    params = {"0.weight": layer.weight}
    prune = OmegaConf.structured(PruneConfig(scope="layerwise", biases=True))
    crit = OmegaConf.create(dict(name="magnitude", batches=1, batch_size=1))
    new = prune_step(model, params, MaskSet.dense(params), 0.5, criterion=crit, prune=prune, batches=lambda: iter(()),
                     loss_fn=nn.functional.cross_entropy)
    assert new["0.weight"].tolist() == [[False, True, False], [True, False, True]]
    assert new["0.bias"].tolist() == [True, False]
    assert new.weights == ("0.weight",)  # the weight sparsity levels.csv reports stays over weights
    assert layer.bias.tolist()[1] == 0.0 and layer.weight[0, 0] == 0.0  # applied
    # the next level keeps what is pruned pruned and counts weights and biases together
    again = prune_step(model, params, new, 0.75, criterion=crit, prune=prune, batches=lambda: iter(()),
                       loss_fn=nn.functional.cross_entropy)
    assert int(again["0.weight"].sum()) + int(again["0.bias"].sum()) == 2
    assert again["0.bias"].tolist() == [True, False] and again["0.weight"][0, 1]


def test_join_and_split_are_inverse_and_dense_biases_count_as_kept():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False))
    weights = ("0.weight", "2.weight")
    biases = layer_biases(model, weights)
    assert biases == {"0.weight": "0.bias"}
    masks = MaskSet({"0.weight": torch.rand(3, 4) < 0.5, "2.weight": torch.rand(2, 3) < 0.5})
    j = joint_masks(masks, biases)
    assert j["0.weight"].shape == (15,) and bool(j["0.weight"][12:].all()) and j["2.weight"].shape == (6,)
    back = split(j, masks, biases)
    assert torch.equal(back["0.weight"], masks["0.weight"]) and back["0.bias"].tolist() == [True] * 3
    assert join({"0.weight": torch.ones(3, 4), "0.bias": torch.zeros(3)}, ["0.weight"], biases)["0.weight"].tolist() == [1.0] * 12 + [0.0] * 3


def test_random_control_draws_weights_and_bias_together_with_the_tickets_count():
    inside = MaskSet({"a.weight": torch.ones(10, 10, dtype=torch.bool)})
    like = MaskSet({"a.weight": torch.rand(10, 10) < 0.3, "a.bias": torch.tensor([True, False] * 5)}, ["a.weight"])
    one = random_masks(inside, like, seed=3)
    assert "a.bias" in one.masks and one.weights == ("a.weight",)
    assert int(one["a.weight"].sum()) + int(one["a.bias"].sum()) == int(like["a.weight"].sum()) + 5
    assert one.equal(random_masks(inside, like, seed=3))


def test_fixed_batch_order_reads_the_split_in_order_every_epoch():
    class Cfg:
        batch_order = "fixed"

    assert batch_order(Cfg, 0, 3, 5, torch.device("cpu")).tolist() == [0, 1, 2, 3, 4]
    Cfg.batch_order = "shuffle"
    a, b = batch_order(Cfg, 0, 0, 50, torch.device("cpu")), batch_order(Cfg, 0, 1, 50, torch.device("cpu"))
    assert sorted(a.tolist()) == list(range(50)) and not torch.equal(a, b)


def test_fixed_batch_order_trains_on_the_notebooks_batches():
    """With batch_order=fixed, two seeds see the same batches: training a linear model from the same
    weights gives the same result whatever the run seed (with shuffling it does not); and it equals
    a hand-written loop over x[i*bs:(i+1)*bs]."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    data = DataSplits(name="t", train_x=x, train_y=y, val_x=x[:0], val_y=y[:0], test_x=x[:8], test_y=y[:8], num_classes=3,
                      input_shape=(5,))
    from omegaconf import OmegaConf

    from pruneexp.config import TrainConfig

    def trained(seed: int, order: str) -> torch.Tensor:
        torch.manual_seed(1)
        model = nn.Linear(5, 3)
        cfg = OmegaConf.structured(TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=10,
                                               duration="6it", lr_schedule="constant", eval_every="6it", batch_order=order))
        train(model, data, MaskSet.dense({"weight": model.weight}), cfg, seed=seed, quiet=True)
        return model.weight.detach().clone()

    assert torch.equal(trained(0, "fixed"), trained(7, "fixed"))
    assert not torch.equal(trained(0, "shuffle"), trained(7, "shuffle"))
    torch.manual_seed(1)
    ref = nn.Linear(5, 3)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.0)
    for step in range(6):
        i = step * 10 % 40
        opt.zero_grad()
        nn.functional.cross_entropy(ref(x[i:i + 10]), y[i:i + 10]).backward()
        opt.step()
    assert torch.allclose(ref.weight, trained(0, "fixed"), atol=1e-6)


def test_an_empty_validation_split_evaluates_to_nan_and_selects_nothing():
    out = TASKS.get("classification").evaluate(nn.Linear(2, 2), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert math.isnan(out["loss"]) and math.isnan(out["acc"])


def test_linear_rounds_reach_level_times_rate_and_mask_step_runs(make_cfg):
    """Linear rounds: level k at k * rate of each layer's weights and bias together; a run with no
    validation split, fixed batches, biases pruned and the mask taken at step 20 of 32 runs through,
    the random control keeping each layer's joint count."""
    common = [*IMP, "schedule.rounds=linear", "schedule.rate=0.25", "prune.biases=true", "dataset.val_size=0",
              "train.batch_order=fixed", "schedule.mask_step=20it"]
    ticket = run(make_cfg(*common))
    levels = pd.read_csv(ticket.directory / "levels.csv")
    assert levels["test_acc"].notna().all() and levels["val_acc"].isna().all()
    assert levels["best_step"].isna().all()  # no validation, no early stop: blank, not -1
    headers, _, _ = table_cells(aggregate(*load_levels([ticket.directory])))
    assert "early-stop iteration" not in headers
    for level in (1, 2, 3):
        masks = MaskSet.from_state_dict(torch.load(ticket.directory / f"levels/level_{level:03d}.pt", weights_only=True)["masks"])
        for w in masks.weights:
            b = w.removesuffix("weight") + "bias"
            n = masks[w].numel() + masks[b].numel()
            kept = int(masks[w].sum()) + int(masks[b].sum())
            assert kept == n - round(0.25 * level * n) or abs(kept - (1 - 0.25 * level) * n) <= 1, (level, w)
    control = run(make_cfg(*common, "schedule.retrain=random_mask"))
    t_layers = pd.read_csv(ticket.directory / "layers.csv")
    c_layers = pd.read_csv(control.directory / "layers.csv")
    assert len(c_layers) == len(t_layers)


def test_mask_step_takes_the_mask_from_that_steps_weights(make_cfg):
    """Level 1's mask is the magnitude mask of the dense weights at mask_step, not at the end."""
    from pruneexp.data import load_data
    from pruneexp.schedules import RunContext
    from pruneexp.pruning.select import select

    cfg = make_cfg(*IMP, "schedule.levels=1", "schedule.mask_step=9it")
    out = run(cfg)
    ctx = RunContext(cfg, load_data(cfg.dataset, "cpu"), torch.device("cpu"), quiet=True)
    model = ctx.build_model()
    train(model, ctx.data, ctx.dense_masks(model), cfg.train, seed=cfg.seed, stop=9, quiet=True)
    dense = ctx.dense_masks(model)
    want = select({n: p.detach().abs() for n, p in ctx.prunable(model).items()}, 0.2, dense, scope="layerwise")
    got = MaskSet.from_state_dict(torch.load(out.directory / "levels/level_001.pt", weights_only=True)["masks"])
    assert got.equal(want)
    final = MaskSet.from_state_dict(torch.load(run(make_cfg(*IMP, "schedule.levels=1")).directory / "levels/level_001.pt",
                                               weights_only=True)["masks"])
    assert not got.equal(final)


@pytest.mark.parametrize("bad, message", [
    (["prune.biases=true", "criterion=taylor"], "scores biases as weights"),
    (["prune.biases=true", "prune.granularity=channel", "criterion=magnitude"], "prune.granularity=weight"),
    (["train.batch_order=sorted"], "batch_order"),
    (["schedule.rounds=cubic"], "schedule.rounds"),
    (["schedule.rounds=linear", "schedule.rate=0.4"], "below 1"),
    (["schedule.mask_step=1000it"], "mask_step"),
    (["schedule.mask_step=5it", "schedule.retrain=finetune"], "mask_step"),
])
def test_notebook_options_refuse_bad_settings_before_training(make_cfg, bad, message):
    with pytest.raises(PruneexpError, match=message):
        run(make_cfg(*IMP, *bad))
