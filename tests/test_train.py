"""The training loop: masks hold under every optimizer, LR schedules, exact resume from a snapshot."""

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from pruneexp.config import TrainConfig
from pruneexp.data import DataSplits
from pruneexp.errors import PruneexpError
from pruneexp.pruning.masks import MaskSet, prunable_weights
from pruneexp.pruning.select import select
from pruneexp.train import train
from pruneexp.train.durations import to_steps
from pruneexp.train.optim import lr_factor


def toy_data(n=256, d=12, classes=3, seed=0) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 64, d, generator=g)
    y = (x @ torch.randn(d, classes, generator=g)).argmax(1)
    return DataSplits(name="toy", train_x=x[:n], train_y=y[:n], val_x=x[n:n + 32], val_y=y[n:n + 32],
                      test_x=x[n + 32:], test_y=y[n + 32:], num_classes=classes, input_shape=(d,), augment=None)


def toy_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))


def cfg(**kw):
    base = OmegaConf.structured(TrainConfig(batch_size=32, duration="40it", eval_every="10it", lr=0.05, lr_schedule="constant"))
    return OmegaConf.merge(base, kw)


@pytest.mark.parametrize("opt", [dict(optimizer="sgd", momentum=0.9, weight_decay=1e-3),
                                 dict(optimizer="adam", lr=1e-2, weight_decay=1e-3),
                                 dict(optimizer="adamw", lr=1e-2, weight_decay=0.1)])
def test_pruned_weights_stay_exactly_zero(opt):
    model = toy_model()
    masks = MaskSet.dense(prunable_weights(model))
    masks = select({n: torch.rand(p.shape) for n, p in prunable_weights(model).items()}, 0.7, masks)
    masks.apply_(model)
    result = train(model, toy_data(), masks, cfg(duration="200it", **opt), seed=0, quiet=True)
    assert result.steps == 200
    for name, p in prunable_weights(model).items():
        assert (p[~masks[name]] == 0).all(), name
        assert (p[masks[name]] != 0).all(), name  # kept weights do train
    # the loop learned something
    assert result.val_acc > 0.6


def test_training_learns_and_logs():
    result = train(toy_model(), toy_data(), MaskSet.dense(prunable_weights(toy_model())), cfg(duration="10ep", eval_every="1ep"), seed=0, quiet=True)
    assert result.steps == 80  # 256 // 32 steps per epoch
    assert [r["step"] for r in result.log] == list(range(8, 81, 8))
    assert result.log[-1]["val_acc"] > 0.7
    assert result.best_step in [r["step"] for r in result.log]


def test_resume_from_a_snapshot_is_bit_exact():
    data, c = toy_data(), cfg(optimizer="sgd", momentum=0.9, lr_schedule="cosine", duration="60it")
    straight = toy_model()
    masks = MaskSet.dense(prunable_weights(straight))
    first = train(straight, data, masks, c, seed=3, snapshot_at={0, 23}, quiet=True)
    resumed = toy_model(seed=99)  # different weights: everything must come from the snapshot
    train(resumed, data, masks, c, seed=3, state=first.snapshots[23], quiet=True)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    # the step-0 snapshot is the initial model: rewinding to it and training again repeats the run
    again = toy_model(seed=7)
    train(again, data, masks, c, seed=3, state=first.snapshots[0], quiet=True)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), again.state_dict().values()))


def test_stop_early_then_continue_equals_one_run():
    data, c = toy_data(), cfg(optimizer="adam", lr=1e-2, lr_schedule="cosine", duration="50it")
    one = toy_model()
    masks = MaskSet.dense(prunable_weights(one))
    train(one, data, masks, c, seed=1, quiet=True)
    two = toy_model()
    half = train(two, data, masks, c, seed=1, stop=17, snapshot_at={17}, quiet=True)
    train(two, data, masks, c, seed=1, state=half.snapshots[17], quiet=True)
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))


def test_durations():
    assert to_steps("40ep", 25) == 1000 and to_steps("5000it", 25) == 5000 and to_steps(" 3 ep", 10) == 30
    for bad in ["40", "ep", "1.5ep", "10 epochs"]:
        with pytest.raises(PruneexpError, match="'<n>ep'"):
            to_steps(bad, 10)


def test_lr_schedules():
    constant = lr_factor(cfg(lr_schedule="constant"), 100, 10)
    assert [constant(s) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    cosine = lr_factor(cfg(lr_schedule="cosine"), 100, 10)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    multistep = lr_factor(cfg(lr_schedule="multistep", milestones=["2ep", "50it"], gamma=0.1), 100, 10)
    assert [multistep(s) for s in (19, 20, 49, 50)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
    linear = lr_factor(cfg(lr_schedule="linear", milestones=["5ep"]), 100, 10)  # Molchanov 2017: flat to 50 %, then to 0
    assert [linear(s) for s in (0, 49, 50, 75, 99)] == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.02])
    assert lr_factor(cfg(lr_schedule="linear"), 100, 10)(50) == pytest.approx(0.5)
    warm = lr_factor(cfg(lr_schedule="cosine", warmup="10it"), 110, 10)
    assert warm(0) == pytest.approx(0.1) and warm(9) == pytest.approx(1.0)
    assert warm(60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
