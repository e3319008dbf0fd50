"""Channel masks that cover a unit's whole footprint: its weight slice, its bias, and the scale and
shift of the BatchNorm that follows it, so that a pruned channel outputs exactly zero (BatchNorm in
eval mode included) and the masked model equals its physically shrunk twin.

The BatchNorm that normalises a layer's output is found on the traced graph (torch.fx: a
BatchNorm call whose input is that layer's call), which is robust to module registration order;
models that cannot be traced fall back to module order (a BatchNorm registered right after the
layer with matching feature count).
"""

from __future__ import annotations

import torch
from torch import fx, nn

from pruneexp.pruning.graph import traced_graph
from pruneexp.pruning.masks import MaskSet, bias_name, owner_name

BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def following_batchnorm(model: nn.Module) -> dict[str, str]:
    """Module name of each Linear/Conv -> module name of the BatchNorm applied to its output."""
    modules = dict(model.named_modules())
    graph = traced_graph(model)
    pairs = {}
    if graph is not None:
        for node in graph.nodes:
            if node.op == "call_module" and isinstance(modules.get(node.target), BN):
                src = node.args[0]
                if isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), LAYERS):
                    if len(src.users) == 1:  # the BatchNorm is the layer's only consumer
                        pairs[src.target] = node.target
        return pairs
    # untraceable control flow: fall back to registration order
    leaves = [(n, m) for n, m in modules.items() if not list(m.children())]
    for (prev, layer), (name, m) in zip(leaves, leaves[1:]):
        if isinstance(m, BN) and isinstance(layer, LAYERS):
            out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            if out == m.num_features:
                pairs[prev] = name
    return pairs


def channel_footprint(model: nn.Module, weight_names: list[str]) -> dict[str, list[str]]:
    """Prunable weight name -> the other parameters indexed by its output channel (its bias, the
    following BatchNorm's weight and bias)."""
    params = dict(model.named_parameters())
    bn = following_batchnorm(model)
    out: dict[str, list[str]] = {}
    for w in weight_names:
        layer = owner_name(w)
        extra = [bias_name(w)]
        if layer in bn:
            extra += [f"{bn[layer]}.weight", f"{bn[layer]}.bias"]
        out[w] = [p for p in extra if p in params]
    return out


def with_channel_footprint(model: nn.Module, masks: MaskSet) -> MaskSet:
    """`masks` plus, for every prunable weight, masks on its bias and following BatchNorm's scale and
    shift that are False exactly where the weight's whole output slice `w[c, ...]` is pruned."""
    new = dict(masks.masks)
    for w, extra in channel_footprint(model, list(masks.weights)).items():
        alive = unit_alive(masks[w])
        if alive.all() and not any(p in new for p in extra):
            continue  # nothing pruned here (the classifier, say): no extra masks
        for p in extra:
            new[p] = alive & new[p] if p in new else alive.clone()
    return MaskSet(new, masks.weights)


def unit_alive(mask: torch.Tensor) -> torch.Tensor:
    """Output units of a weight mask that still have a kept weight."""
    return mask.reshape(mask.shape[0], -1).any(1)
