"""Biases pruned together with their layer's weights (`prune.biases=true`).

Greydanus's MNIST-1D lottery-ticket notebook (github.com/greydanus/mnist1d, notebooks/
lottery-tickets.ipynb) masks each layer's parameters as one vector, `cat(weight.flatten(), bias)`,
scored and thresholded together: a layer at sparsity s keeps the (1 - s) largest of its weights
*and* biases, ranked against each other. Here a layer's weight and bias are joined into that one
flat vector, the selector picks on it as on any weight (scope, layer targets, nothing revived),
and the result is split back into the weight's mask and a mask for the bias (a mask of the MaskSet
outside its `weights`, like a pruned channel's bias: applied by the training loop, not counted in
the weight sparsity that levels.csv reports).

Hand-written: no pruning library selects over a weight and its bias as one vector.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import Tensor, nn

from pruneexp.pruning.masks import MaskSet, bias_name

# Criteria whose score of an entry depends on that entry alone, so a bias is scored as a weight is.
CRITERIA = ("magnitude", "random")


def layer_biases(model: nn.Module, weights: Iterable[str]) -> dict[str, str]:
    """weight name -> the name of its bias, for the weights whose layer has one."""
    params = dict(model.named_parameters())
    return {w: bias_name(w) for w in weights if bias_name(w) in params and bias_name(w) != w}


def join(tensors: Mapping[str, Tensor], weights: Iterable[str], biases: Mapping[str, str]) -> dict[str, Tensor]:
    """weight name -> cat(weight.flatten(), bias.flatten()) (the weight alone where it has no bias)."""
    return {w: torch.cat([tensors[w].flatten(), tensors[biases[w]].flatten().to(tensors[w].device)]) if w in biases
            else tensors[w].flatten() for w in weights}


def joint_masks(masks: MaskSet, biases: Mapping[str, str]) -> MaskSet:
    """The MaskSet over joined (weight, bias) vectors, keyed by the weight names; a bias without a
    mask yet (dense) counts as all kept. A weight's mask gives its bias's length (one per output)."""
    full = dict(masks.masks)
    for w, b in biases.items():
        if b not in full:
            full[b] = torch.ones(masks[w].shape[0], dtype=torch.bool, device=masks[w].device)
    return MaskSet(join(full, masks.weights, biases), masks.weights)


def split(joint: MaskSet, like: MaskSet, biases: Mapping[str, str]) -> MaskSet:
    """Back from joined vectors: the weights' masks in their shapes (as in `like`), plus a mask per bias."""
    masks = dict(like.masks)
    for w in like.weights:
        flat = joint[w]
        n = like[w].numel()
        masks[w] = flat[:n].view(like[w].shape).clone()
        if w in biases:
            masks[biases[w]] = flat[n:].clone()
    return MaskSet(masks, like.weights)
