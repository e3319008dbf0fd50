"""The random control."""

from __future__ import annotations

import torch

from pruneexp.pruning.criteria import ScoreContext, Scores, register_criterion


@register_criterion("random", granularities=("weight", "channel", "nm", "block"), reads="weights")
def random(ctx: ScoreContext) -> Scores:
    """s_g ~ U(0, 1) i.i.d. per group, from a generator seeded by the run seed (the control of every
    pruning paper; Blalock et al. 2020, "What is the State of Neural Network Pruning?")."""
    gen = torch.Generator().manual_seed(ctx.seed)
    return {n: torch.rand(ctx.granularity.group_shape(p.shape), generator=gen, dtype=torch.float64)
            for n, p in ctx.params.items()}
