"""FLOPs of one forward pass, dense, under the masks, and on input-to-output paths (the effective
masks), counted by torch.utils.flop_counter."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from pruneexp.models.base import example_batch
from pruneexp.pruning.masks import MaskSet


@dataclass
class LayerFlops:
    total: int  # FLOPs of the whole model for one example (multiply and add counted separately)
    per_weight: dict[str, int]  # prunable weight name -> FLOPs of its layer


# torch's registry lacks the CPU flash-attention kernel that scaled_dot_product_attention runs on
# CPU; its FLOPs are those of the flash kernel (Q K^T and A V: 4 B H L S E).
FORMULAS = {**flop_registry,
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: flop_registry[torch.ops.aten._scaled_dot_product_flash_attention]}


class _WeightFlops(TorchDispatchMode):
    """Counts FLOPs of every operator torch's flop counter knows (its `flop_registry`: matmuls,
    convolutions, attention), in total and per prunable weight: an operator's FLOPs go to the weight
    among its arguments, recognised by storage, so a weight used through a view (the Q, K and V
    slices of nn.MultiheadAttention's packed `in_proj_weight`, `weight.t()` inside addmm) or
    outside its module's forward (attention's `out_proj`) is still counted as its own layer's.
    Written by hand because FlopCounterMode attributes FLOPs to modules, not to weights."""

    def __init__(self, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.names = {w.untyped_storage().data_ptr(): n for n, w in weights.items()}
        self.per_weight = dict.fromkeys(weights, 0)
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = FORMULAS.get(func._overloadpacket)
        if formula is not None:
            flops = int(formula(*args, **kwargs, out_val=out))
            self.total += flops
            owners = {self.names.get(a.untyped_storage().data_ptr()) for a in args if isinstance(a, torch.Tensor)} - {None}
            for name in owners:
                self.per_weight[name] += flops
        return out


@torch.no_grad()
def count_layer_flops(model: nn.Module, input_shape: tuple[int, ...], weights: list[str]) -> LayerFlops:
    """Dense FLOPs for a batch of one, in total and for each operator applying a prunable weight
    (multiply and add counted separately; torch.utils.flop_counter's formulas)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    params = dict(model.named_parameters())
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused encoder kernel has no FLOP formula: count its matmuls
    try:
        with _WeightFlops({w: params[w] for w in weights}) as counter:
            model(example_batch(model, 1, tuple(input_shape), device=device).zero_())
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
    return LayerFlops(total=counter.total, per_weight=counter.per_weight)


def masked_flops(flops: LayerFlops, masks: MaskSet) -> int:
    """FLOPs left when each layer's multiply-adds scale with its weight density:
    F_masked = F_dense - sum_l F_l * (1 - nnz(m_l) / |m_l|)  (the count pruning papers report). A
    layer counted in `flops` that `masks` does not mask counts whole. With the masks as selected
    this is levels.csv's `effective_flops` / `flop_ratio`; with the effective masks
    (`pruning.masks.effective_chain`) it is `connected_flops`."""
    removed = 0.0
    for w, f in flops.per_weight.items():
        if w in masks:
            mask = masks[w]
            removed += f * (1.0 - int(mask.sum()) / mask.numel())
    return int(round(flops.total - removed))


def connected_flops(flops: LayerFlops, effective: MaskSet | None) -> int | None:
    """FLOPs of the weights on an input-to-output path: `masked_flops` under the effective masks of
    the whole chain of layers (`effective_chain`: a kept weight counts only where its input and output
    units are alive; Vysogorets & Kempe 2023, "Connectivity Matters", JMLR). A weight that reads a
    removed unit computes nothing the output sees, so under channel pruning this is exactly the
    FLOPs of the physically shrunk network (`pruning.shrink`), where the masks' own count still
    charges the next layer's columns that read the removed units. `flops` must count every layer
    the effective masks cover (count_layer_flops over `layer_weights`). None where the layers are
    not a chain (effective masks unknown: residual nets, attention)."""
    if effective is None:
        return None
    missing = [w for w in effective.weights if w not in flops.per_weight]
    if missing:
        raise ValueError(f"connected_flops: FLOPs not counted per weight for {missing}; count every layer weight")
    return masked_flops(flops, effective)
