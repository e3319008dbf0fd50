"""Physically shrunk models (pruneexp.pruning.shrink) on hand-made channel masks: same outputs as the
masked model, exact parameter counts, residual couplings, save and load."""

import copy

import pytest
import torch
from torch import nn

from pruneexp.models import create_model
from pruneexp.pruning.masks import MaskSet, prunable_weights
from pruneexp.pruning.shrink import load_shrunk, save_shrunk, shrink

from channel_cases import ConvBN, _randomize_bn, prune_out


def masked_out(model, masks, x):
    ref = copy.deepcopy(model).eval()
    masks.apply_(ref)
    with torch.no_grad():
        return ref(x)


def close(a, b):
    return (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())


def test_mlp_neurons_removed_same_outputs_and_exact_count():
    torch.manual_seed(0)
    model = create_model("mlp", (1, 8, 8), 10, widths=[32, 16]).eval()
    masks = MaskSet.dense(prunable_weights(model))
    prune_out(masks, model, "layers.1", list(range(10)))
    prune_out(masks, model, "layers.3", [0, 1, 2, 3])
    res = shrink(model, masks, (1, 8, 8))
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert close(res.model(x), masked_out(model, masks, x))
    assert [m.out_features for m in res.model.modules() if isinstance(m, nn.Linear)] == [22, 12, 10]
    # "non-zero" = parameter entries not masked out (MaskSet.report().total_nonzero) minus the entries
    # that only read a removed neuron: the unmasked input columns of the next layer, on its kept rows.
    rep = masks.report(model)
    dead_inputs = 12 * 10 + 10 * 4  # layers.3[:, :10] on its 12 kept rows, layers.5[:, :4]
    assert res.params == rep.total_nonzero - dead_inputs == res.live_params
    assert res.params == (64 * 22 + 22) + (22 * 12 + 12) + (12 * 10 + 10)
    assert res.removed == 14 and res.inconsistent == 0


def test_conv_bn_channels_removed_same_outputs_and_exact_count(convbn_case):
    model, masks = convbn_case
    res = shrink(model, masks, (3, 8, 8))
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert close(res.model(x), masked_out(model, masks, x))
    assert (res.model.conv1.out_channels, res.model.conv2.out_channels, res.model.fc.in_features) == (5, 8, 8 * 16)
    rep = masks.report(model)
    dead_inputs = 8 * 3 * 9 + 10 * 4 * 16  # conv2[:, dead1] on its 8 kept rows; fc columns of 4 channels x 16 pixels
    assert res.params == rep.total_nonzero - dead_inputs == res.live_params
    # only the BN channel masks make a channel removable: without them nothing is dead
    weights_only = MaskSet({k: v for k, v in masks.masks.items() if k.endswith("weight") and "bn" not in k})
    assert shrink(model, weights_only, (3, 8, 8)).removed == 0


def test_resnet20_residual_groups_shrunk_and_counted_exactly(resnet20_case):
    model, masks = resnet20_case
    res = shrink(model, masks, (3, 8, 8))
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert close(res.model(x), masked_out(model, masks, x))
    assert res.inconsistent == 0
    assert res.model.conv1.out_channels == 15 and res.model.blocks[0].conv1.out_channels == 8
    assert res.model.blocks[3].shortcut[0].in_channels == 15
    # independent count: complete the masks by hand with every consumer input slice, then count
    full = masks.clone()
    for i in range(9):
        n = model.blocks[i].conv1.out_channels
        full.masks[f"blocks.{i}.conv2.weight"][:, list(range(0, n, 2))] = False
    for consumer in ["blocks.0.conv1", "blocks.1.conv1", "blocks.2.conv1", "blocks.3.conv1", "blocks.3.shortcut.0"]:
        full.masks[f"{consumer}.weight"][:, 3] = False
    assert res.params == full.report(model).total_nonzero == res.live_params


def test_resnet20_inconsistent_residual_channel_is_kept_and_reported():
    torch.manual_seed(0)
    model = _randomize_bn(create_model("resnet20", (3, 8, 8), 10))
    masks = MaskSet.dense(prunable_weights(model))
    prune_out(masks, model, "blocks.0.conv2", [5], bn="blocks.0.bn2")  # partners in the sum still use channel 5
    res = shrink(model, masks, (3, 8, 8))
    assert res.removed == 0 and res.inconsistent == 1
    assert "inconsistent" in res.summary()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert close(res.model(x), masked_out(model, masks, x))


def test_shrunk_model_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(ConvBN())
    masks = MaskSet.dense(prunable_weights(model))
    prune_out(masks, model, "conv1", [0, 2], bn="bn1")
    res = shrink(model, masks, (3, 8, 8))
    save_shrunk(res.model, tmp_path / "shrunk.pt")
    torch.manual_seed(1)
    loaded = load_shrunk(tmp_path / "shrunk.pt", ConvBN()).eval()  # a state_dict carries no train/eval mode
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model(x))
    assert loaded.conv1.out_channels == 6
