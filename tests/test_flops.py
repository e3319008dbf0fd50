"""FLOPs by the masks and on input-to-output paths (connected_flops) against hand counts and the
physically shrunk network's own count."""

import torch
from torch import nn

from pruneexp.measure import connected_flops, count_layer_flops, masked_flops
from pruneexp.models import create_model
from pruneexp.pruning.masks import MaskSet, effective_chain, layer_weights, prunable_weights
from pruneexp.pruning.shrink import shrink

from channel_cases import prune_out


def mlp_flops(model, input_shape=(1, 8, 8)):
    return count_layer_flops(model, input_shape, list(layer_weights(model)))


def test_channel_pruned_mlp_connected_flops_equal_the_shrunk_networks():
    """The known answer: a channel-pruned MLP's FLOPs on input-to-output paths are exactly the FLOPs
    the physically shrunk network executes; the masks' own count still charges the columns of the
    next layer that read the removed units."""
    torch.manual_seed(0)
    model = create_model("mlp", (1, 8, 8), 10, widths=[32, 16]).eval()
    masks = MaskSet.dense(prunable_weights(model, exclude=["@last"]))  # the classifier unpruned, as channel pruning leaves it
    prune_out(masks, model, "layers.1", list(range(10)))
    prune_out(masks, model, "layers.3", [0, 1, 2, 3])
    flops = mlp_flops(model)
    shrunk = shrink(model, masks, (1, 8, 8)).model
    shrunk_flops = count_layer_flops(shrunk, (1, 8, 8), []).total
    assert shrunk_flops == 2 * (64 * 22 + 22 * 12 + 12 * 10)
    connected = connected_flops(flops, effective_chain(model, masks))
    assert connected == shrunk_flops
    # by the masks: layers.3 keeps its 12 rows' columns of the 10 removed units, the classifier reads all 16
    assert masked_flops(flops, masks) == 2 * (64 * 22 + 22 * 12 + 10 * 12 + 16 * 10) > connected


def test_channel_pruned_convnet_connected_flops_equal_the_shrunk_networks(convbn_case):
    """The same through convolutions, BatchNorm and a flatten into a linear layer."""
    model, masks = convbn_case
    model.eval()
    flops = count_layer_flops(model, (3, 8, 8), list(layer_weights(model)))
    shrunk = shrink(model, masks, (3, 8, 8)).model
    assert connected_flops(flops, effective_chain(model, masks)) == count_layer_flops(shrunk, (3, 8, 8), []).total
    assert masked_flops(flops, masks) > count_layer_flops(shrunk, (3, 8, 8), []).total


def test_connected_flops_drop_a_unit_cut_off_by_unstructured_masks():
    """A hidden unit whose every input weight is pruned is gone with its outputs: its outgoing weights
    count no FLOPs (hand count), the masks' count keeps them."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    m1 = torch.ones(4, 3, dtype=torch.bool)
    m1[0] = False  # unit 0 has no input: its two outgoing weights carry nothing
    masks = MaskSet({"0.weight": m1, "2.weight": torch.ones(2, 4, dtype=torch.bool)})
    flops = count_layer_flops(model, (3,), list(masks.weights))
    assert flops.total == 2 * (3 * 4 + 4 * 2)
    assert masked_flops(flops, masks) == 2 * (9 + 8)
    assert connected_flops(flops, effective_chain(model, masks)) == 2 * (9 + 6)


def test_connected_flops_unknown_where_the_layers_are_no_chain():
    residual = create_model("residual_mlp", (1, 8, 8), 10, widths=[16, 16])
    masks = MaskSet.dense(prunable_weights(residual))
    assert effective_chain(residual, masks) is None
    assert connected_flops(mlp_flops(residual), None) is None
