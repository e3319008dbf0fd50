"""Wanda (Sun, Liu, Bair & Kolter 2023, "A Simple and Effective Pruning Approach for Large Language
Models"): pruning by weights and activations, with no weight update and no retraining.

    S_ij = |W_ij| * ||X_j||_2

with ||X_j||_2 the L2 norm of input feature j over every calibration token (all rows of all
calibration batches reaching the layer; for a conv, j runs over the unfolded patch entries, so
S has the weight's shape), compared within each output row: `prune.scope=row` is
the paper's per-output comparison group (`global`/`layerwise` are the reference code's per-layer
option). `prune.granularity=nm` gives its N:M variant along the input dimension.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pruneexp.pruning.criteria import ScoreContext, Scores, register_criterion
from pruneexp.pruning.criteria.common import each_layer_input


def input_norms(ctx: ScoreContext) -> dict[str, Tensor]:
    """||X_j||_2 per input column of every scored layer (a conv's unfolded patch entries), over all
    calibration tokens."""
    sums = {n: torch.zeros(p[0].numel(), dtype=torch.float64, device=p.device) for n, p in ctx.params.items()}

    def accumulate(n: str, rows: Tensor) -> None:
        # a float32 square is exact in float64; squaring the float64 copy in place gives the same
        # bits as rows.double().square() without a second (N, in) float64 tensor: 2-4x faster
        x = rows.to(torch.float64, copy=True)
        sums[n].add_(x.mul_(x).sum(0))

    each_layer_input(ctx, accumulate)
    return {n: s.sqrt() for n, s in sums.items()}


@register_criterion("wanda", granularities=("weight", "nm"), reads="layer_inputs")
def wanda(ctx: ScoreContext) -> Scores:
    """S_ij = |W_ij| * ||X_j||_2 (Sun et al. 2023); use with prune.scope=row."""
    norms = input_norms(ctx)
    return {n: w.detach().abs().double() * norms[n].view(1, *w.shape[1:]) for n, w in ctx.params.items()}
