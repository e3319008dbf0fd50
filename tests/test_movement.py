"""Movement pruning (Sanh et al. 2020) on known answers: the straight-through gradient of the
scores is dL/dW' * W, the weights' gradient is masked, the hard mask keeps the top scores of each
layer at the cubic schedule's sparsity; runs from the command line, hard and soft."""

import pandas as pd
import pytest
import torch
from torch import nn

from pruneexp.errors import PruneexpError
from pruneexp.runner import run
from pruneexp.schedules.movement import fold, reparameterise
from pruneexp.validate import validate


def test_scores_get_the_straight_through_gradient_and_the_hard_mask_keeps_the_top_scores():
    layer = nn.Sequential(nn.Linear(4, 2, bias=False))
    w = torch.tensor([[1.0, -2.0, 3.0, -4.0], [0.5, 0.25, -1.0, 2.0]])
    with torch.no_grad():
        layer[0].weight.copy_(w)
    state = dict(variant="hard", sparsity=0.5, threshold=0.0)
    (part,) = reparameterise(layer, ["0.weight"], state)
    with torch.no_grad():
        part.scores.copy_(torch.tensor([[4.0, 3.0, 2.0, 1.0], [0.0, 8.0, 7.0, -1.0]]))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    layer(x).sum().backward()  # dL/dW'_ij = x_j
    assert torch.equal(part.scores.grad, x.expand(2, 4) * w)  # STE: dL/dS = dL/dW' * W, masked entries included
    keep = torch.tensor([[True, True, False, False], [False, True, True, False]])  # top 4 of 8 scores in the layer
    original = layer[0].parametrizations.weight.original
    assert torch.equal(original.grad, x.expand(2, 4) * keep)  # dL/dW = dL/dW' * M
    assert torch.equal(layer[0].weight, w * keep)
    masks = fold(layer, ["0.weight"], [part])
    assert torch.equal(masks["0.weight"], keep) and torch.equal(layer[0].weight.detach(), w * keep)
    assert not parametrize_left(layer)


def parametrize_left(model):
    from torch.nn.utils import parametrize

    return any(parametrize.is_parametrized(m) for m in model.modules())


def test_movement_runs_hard_and_soft_from_the_command_line(make_cfg):
    directory = run(make_cfg("schedule=movement", "train.duration=4ep", "schedule.end=2ep", "quiet=true", "hardware.levels=none")).directory
    layers = pd.read_csv(directory / "layers.csv")
    assert (layers[layers["level"] == 1]["sparsity"] == 0.9).all()  # each layer at the target
    soft = run(make_cfg("schedule=movement", "schedule.variant=soft", "schedule.penalty=1.0", "train.duration=2ep",
                        "quiet=true", "hardware.levels=none")).directory
    assert (soft / "levels.csv").exists()
    with pytest.raises(PruneexpError, match="granularity=channel"):
        validate(make_cfg("schedule=movement", "prune.granularity=channel"))
    with pytest.raises(PruneexpError, match="hard"):
        validate(make_cfg("schedule=movement", "schedule.variant=medium"))


def scored_toy(score_lr, score_weight_decay=None, sparsity=0.0):
    """The toy network with both weights reparameterised, its Movement hook and its parts."""
    from omegaconf import OmegaConf

    from pruneexp.schedules.movement import Movement, MovementConfig

    from test_train import cfg, toy_model

    model = toy_model()
    names = ["0.weight", "2.weight"]
    state = dict(variant="hard", sparsity=sparsity, threshold=0.0)
    parts = reparameterise(model, names, state)
    s = OmegaConf.structured(MovementConfig(name="movement", score_lr=score_lr, score_weight_decay=score_weight_decay))
    train_cfg = cfg(optimizer="sgd", momentum=0.0, nesterov=False, weight_decay=1e-3, lr=0.05)
    return model, parts, Movement(state, s, 0, 1, sparsity, parts, train_cfg), train_cfg


def test_scores_train_in_their_own_group_at_score_lr_under_the_lr_schedule():
    """Sanh's `mask_scores` group: after one SGD step (no momentum) from S = 0 with the LR warm-up at
    half its value, S = -0.5 * score_lr * dL/dS, while the weights take 0.5 * train.lr and their decay."""
    from test_train import toy_data

    from pruneexp.pruning.masks import MaskSet
    from pruneexp.train import train

    data = toy_data()
    model, parts, hook, train_cfg = scored_toy(score_lr=0.5, score_weight_decay=0.0)
    originals = [model[i].parametrizations.weight.original for i in (0, 2)]
    w0 = [p.detach().clone() for p in originals]
    loss = nn.functional.cross_entropy(model(data.train_x), data.train_y)
    grads = torch.autograd.grad(loss, [p.scores for p in parts] + originals)
    one = train_cfg.copy()
    one.merge_with(dict(duration="1it", batch_size=len(data.train_x), warmup="2it"))  # factor 1/2 at step 0
    train(model, data, MaskSet({}), one, seed=0, sparsifier=hook, quiet=True)
    for part, g in zip(parts, grads[:2]):
        torch.testing.assert_close(part.scores.detach(), -0.5 * 0.5 * g, rtol=1e-4, atol=1e-7)
    for p, w, g in zip(originals, w0, grads[2:]):
        torch.testing.assert_close(p.detach(), w - 0.5 * 0.05 * (g + 1e-3 * w), rtol=1e-4, atol=1e-7)
    groups = hook.param_groups(model)
    assert [g.get("lr") for g in groups] == [None, 0.5] and groups[1]["weight_decay"] == 0.0
    # unset: one group, the scores at train.lr (what runs did before the option existed)
    assert scored_toy(score_lr=None)[2].param_groups(model) is None
    assert scored_toy(score_lr=None, score_weight_decay=0.0)[2].param_groups(model)[1]["lr"] == 0.05


def test_the_movement_score_of_a_weight_moving_away_from_zero_grows():
    """loss = -(w1 x1 + w2 x2) with x = (1, 1) pushes both weights up: w1 = +1 moves away from zero,
    its score grows (dL/dS = dL/dW' * W = -1 < 0); w2 = -1 moves towards zero, its score falls."""
    from test_train import cfg

    from pruneexp.schedules.movement import Movement, MovementConfig
    from pruneexp.train.optim import make_optimizer
    from omegaconf import OmegaConf

    layer = nn.Sequential(nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        layer[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
    state = dict(variant="hard", sparsity=0.0, threshold=0.0)
    (part,) = reparameterise(layer, ["0.weight"], state)
    s = OmegaConf.structured(MovementConfig(name="movement", score_lr=0.01, score_weight_decay=0.0))
    train_cfg = cfg(optimizer="sgd", momentum=0.0, nesterov=False, weight_decay=0.0, lr=0.1)
    opt = make_optimizer(Movement(state, s, 0, 1, 0.0, [part], train_cfg).param_groups(layer), train_cfg)
    (-layer(torch.ones(1, 2)).sum()).backward()
    opt.step()
    w = layer[0].parametrizations.weight.original.detach()
    assert torch.equal(part.scores.detach(), torch.tensor([[0.01, -0.01]]))  # -score_lr * (-x * w)
    assert w[0, 0] > 1.0 and abs(w[0, 1]) < 1.0


def test_score_options_are_hash_neutral_unset_and_checked(make_cfg):
    from pruneexp.runner import run_directory

    base = make_cfg("schedule=movement")
    assert run_directory(base) == run_directory(make_cfg("schedule=movement", "schedule.score_lr=null"))
    assert run_directory(make_cfg("schedule=movement", "schedule.score_lr=0.01")) != run_directory(base)
    with pytest.raises(PruneexpError, match="score_lr"):
        validate(make_cfg("schedule=movement", "schedule.score_lr=0"))
    with pytest.raises(PruneexpError, match="start < schedule.end <= train.duration"):
        run(make_cfg("schedule=movement", "train.duration=2ep", "schedule.end=3ep", "quiet=true", "hardware.levels=none"))
