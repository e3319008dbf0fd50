"""FLOPs of one forward pass, dense and effective under masks, counted by torch.utils.flop_counter."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pruneexp.pruning.masks import MaskSet


@dataclass
class LayerFlops:
    total: int  # FLOPs of the whole model for one example (multiply and add counted separately)
    per_weight: dict[str, int]  # prunable weight name -> FLOPs of its layer


@torch.no_grad()
def count_layer_flops(model: nn.Module, input_shape: tuple[int, ...], weights: list[str]) -> LayerFlops:
    """Dense FLOPs for a batch of one, in total and for each layer owning a prunable weight."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    per_weight = {}
    for w in weights:
        module = w.rsplit(".", 1)[0] if "." in w else ""
        key = f"{root}.{module}" if module else root
        per_weight[w] = int(sum(counts.get(key, {}).values()))
    return LayerFlops(total=int(counter.get_total_flops()), per_weight=per_weight)


def effective_flops(flops: LayerFlops, masks: MaskSet) -> int:
    """FLOPs left when each layer's multiply-adds scale with its weight density:
    F_eff = F_dense - sum_l F_l * (1 - nnz(m_l) / |m_l|)  (the count pruning papers report)."""
    removed = 0.0
    for w, f in flops.per_weight.items():
        mask = masks[w]
        removed += f * (1.0 - int(mask.sum()) / mask.numel())
    return int(round(flops.total - removed))
