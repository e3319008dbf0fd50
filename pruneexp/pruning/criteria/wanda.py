"""Wanda (Sun, Liu, Bair & Kolter 2023, "A Simple and Effective Pruning Approach for Large Language
Models"): pruning by weights and activations, with no weight update and no retraining.

    S_ij = |W_ij| * ||X_j||_2

with ||X_j||_2 the L2 norm of input feature j over every calibration token (all rows of all
calibration batches reaching the layer), compared within each output row: `prune.scope=row` is
the paper's per-output comparison group (`global`/`layerwise` are the reference code's per-layer
option). `prune.granularity=nm` gives its N:M variant along the input dimension.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pruneexp.errors import PruneexpError
from pruneexp.pruning.criteria import ScoreContext, Scores, register_criterion
from pruneexp.pruning.criteria.common import modules_by_weight, scoring_mode


def input_norms(ctx: ScoreContext) -> dict[str, Tensor]:
    """||X_j||_2 per input feature of every scored linear layer, over all calibration tokens."""
    modules = modules_by_weight(ctx.model, list(ctx.params))
    sums = {n: torch.zeros(p.shape[1], dtype=torch.float64, device=p.device) for n, p in ctx.params.items()}
    hooks = []
    for n, module in modules.items():
        if not isinstance(module, nn.Linear):
            raise PruneexpError(f"criterion wanda scores linear layers (inputs are feature vectors); {n} is a "
                                f"{type(module).__name__}: exclude it with prune.exclude or prune.layer_types=[linear].")
        def accumulate(_m: nn.Module, inp: tuple[Tensor, ...], _out: Tensor, n: str = n) -> None:  # None: output unchanged
            sums[n].add_(inp[0].detach().reshape(-1, inp[0].shape[-1]).double().square().sum(0))

        hooks.append(module.register_forward_hook(accumulate))
    try:
        with scoring_mode(ctx.model), torch.no_grad():
            for x, _ in ctx.batches():
                ctx.model(x)
    finally:
        for h in hooks:
            h.remove()
    return {n: s.sqrt() for n, s in sums.items()}


@register_criterion("wanda", granularities=("weight", "nm"))
def wanda(ctx: ScoreContext) -> Scores:
    """S_ij = |W_ij| * ||X_j||_2 (Sun et al. 2023); use with prune.scope=row."""
    norms = input_norms(ctx)
    return {n: w.detach().abs().double() * norms[n].unsqueeze(0) for n, w in ctx.params.items()}
