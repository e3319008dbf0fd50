"""The initial scale of a network made sparse before training.

A mask of density d_l applied to a dense initialisation leaves each unit's pre-activation with
d_l times the variance the initialisation was built for (He et al. 2015's Var(y) = fan_in ·
Var(w) · E[x²] counts every input, and only d_l · fan_in remain). Through a deep, very sparse
network the signal and the gradients shrink by the product of the densities, so training starts
slowly or not at all (Evci, Ioannou, Keskin & Dauphin 2022, "Gradient Flow in Sparse Neural
Networks and How Lottery Tickets Win"; Lee et al. 2020, "A Signal Propagation Perspective for
Pruning Neural Networks at Initialization").

`layer_scaled` is the RigL code base's `layer_scaled_init` (google-research/rigl,
rigl/init_utils.py): the dense initialisation divided by √(fraction of nonzeros of the layer),

    w_l ← w_l / √d_l,    d_l = |m_l ≠ 0| / |m_l|,

so each kept weight has the variance of a dense layer whose fan-in is the layer's average
remaining fan-in. Biases are left as they are. `dense` (the default) keeps the model's own
initialisation, masked, as every run made before this option did.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pruneexp.errors import PruneexpError
from pruneexp.pruning.masks import MaskSet

SPARSE_INITS = ("dense", "layer_scaled")


def check_sparse_init(value: str) -> None:
    if value not in SPARSE_INITS:
        raise PruneexpError(f"Unknown schedule.sparse_init '{value}'; known: {', '.join(SPARSE_INITS)} "
                            f"(layer_scaled: the RigL code's init scaled by 1/sqrt(layer density)).")


@torch.no_grad()
def scale_for_density(model: nn.Module, masks: MaskSet, how: str) -> MaskSet:
    """Scale each masked weight of the untrained `model` by 1/√d_l (`how="layer_scaled"`; see the
    module), or leave it (`"dense"`); return `masks` (for a level's work function)."""
    check_sparse_init(how)
    if how == "dense":
        return masks
    params = dict(model.named_parameters())
    for name in masks.weights:
        density = float(masks[name].float().mean())
        if 0.0 < density < 1.0:
            params[name].mul_(1.0 / math.sqrt(density))
    return masks


__all__ = ["SPARSE_INITS", "check_sparse_init", "scale_for_density"]
