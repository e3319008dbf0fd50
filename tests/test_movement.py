"""Movement pruning (Sanh et al. 2020) on known answers: the straight-through gradient of the
scores is dL/dW' * W, the weights' gradient is masked, the hard mask keeps the top scores of each
layer at the cubic schedule's sparsity; runs from the command line, hard and soft."""

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
    layers = (directory / "layers.csv").read_text().splitlines()
    assert all(line.endswith(",0.9") for line in layers if line.startswith("1,"))  # each layer at the target
    soft = run(make_cfg("schedule=movement", "schedule.variant=soft", "schedule.penalty=1.0", "train.duration=2ep",
                        "quiet=true", "hardware.levels=none")).directory
    assert (soft / "levels.csv").exists()
    with pytest.raises(PruneexpError, match="granularity=channel"):
        validate(make_cfg("schedule=movement", "prune.granularity=channel"))
    with pytest.raises(PruneexpError, match="hard"):
        validate(make_cfg("schedule=movement", "schedule.variant=medium"))
