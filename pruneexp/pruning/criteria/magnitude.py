"""Weight-based criteria: magnitude, group norms, LAMP, BatchNorm scales, filter redundancy."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pruneexp.config import CriterionConfig
from pruneexp.errors import PruneexpError
from pruneexp.pruning.channels import following_batchnorm
from pruneexp.pruning.masks import owner_name
from pruneexp.pruning.criteria import ScoreContext, Scores, register_criterion
from pruneexp.pruning.criteria.common import greedy_redundancy


@register_criterion("magnitude", granularities=("weight", "channel", "nm", "block"), reads="weights")
def magnitude(ctx: ScoreContext) -> Scores:
    """s_q = |w_q|  (Han et al. 2015, "Learning both Weights and Connections for Efficient Neural
    Networks"; the criterion of the lottery-ticket experiments, Frankle & Carbin 2019). Groups reduce
    by prune.group_reduce."""
    return {name: p.detach().abs() for name, p in ctx.params.items()}


@dataclass
class NormConfig(CriterionConfig):
    p: float = 1.0  # norm order of the group norm


@register_criterion("norm", granularities=("channel", "block"), config=NormConfig, reads="weights")
def norm(ctx: ScoreContext) -> Scores:
    """s_g = ||w_g||_p = (sum_{q in g} |w_q|^p)^(1/p), p = criterion.p (1: Li et al. 2017, "Pruning
    Filters for Efficient ConvNets", L1 filter norm; 2: the L2 variant)."""
    p = float(ctx.cfg.p)
    return {n: ctx.granularity.reduce(w.detach().double().abs().pow(p), "sum").pow(1.0 / p) for n, w in ctx.params.items()}


@register_criterion("lamp", granularities=("weight", "nm"), reads="weights")
def lamp(ctx: ScoreContext) -> Scores:
    """LAMP (Lee et al. 2021, "Layer-adaptive Sparsity for the Magnitude-based Pruning"): with a
    layer's weights sorted so that |w_1| <= |w_2| <= ..., s_u = w_u^2 / sum_{v >= u} w_v^2. Scores are
    comparable across layers: use it with prune.scope=global."""
    out = {}
    for n, w in ctx.params.items():
        sq = w.detach().double().flatten().square()
        order = torch.sort(sq, stable=True).indices
        sorted_sq = sq[order]
        suffix = sorted_sq.flip(0).cumsum(0).flip(0)
        s = torch.empty_like(sq)
        s[order] = sorted_sq / suffix.clamp_min(torch.finfo(torch.float64).tiny)
        out[n] = s.view_as(w)
    return out


@register_criterion("bn_scale", granularities=("channel",))
def bn_scale(ctx: ScoreContext) -> Scores:
    """s_c = |gamma_c| of the BatchNorm that follows the layer (Liu et al. 2017, "Learning Efficient
    Convolutional Networks through Network Slimming"; usually after L1-penalised training)."""
    modules = dict(ctx.model.named_modules())
    bn = following_batchnorm(ctx.model)
    layers = {n: owner_name(n) for n in ctx.params}
    missing = [n for n, layer in layers.items() if layer not in bn]
    if missing:
        raise PruneexpError(f"criterion bn_scale needs a BatchNorm after every pruned layer; none follows {', '.join(missing)} "
                            f"(exclude them with prune.exclude, or use another channel criterion).")
    return {n: modules[bn[layer]].weight.detach().abs().double() for n, layer in layers.items()}


@register_criterion("cosine", granularities=("channel",), reads="weights")
def cosine(ctx: ScoreContext) -> Scores:
    """Filter redundancy by direction: with cos_ij = <w_i, w_j> / (|w_i| |w_j|) over a layer's unit
    weight vectors, greedily remove the unit most collinear with a kept one; s_i = -cos at removal
    (a filter with cosine ~1 to a kept filter is redundant; in the spirit of Srinivas & Babu 2015,
    "Data-free Parameter Pruning for Deep Neural Networks"). Of two duplicates exactly one goes."""
    out = {}
    for n, w in ctx.params.items():
        rows = torch.nn.functional.normalize(w.detach().double().flatten(1), dim=1)
        out[n] = greedy_redundancy(rows @ rows.T)
    return out


@register_criterion("fpgm", granularities=("channel",), reads="weights")
def fpgm(ctx: ScoreContext) -> Scores:
    """FPGM (He et al. 2019, "Filter Pruning via Geometric Median"): filters near the layer's
    geometric median are the most replaceable. As in the paper's implementation, s_i =
    sum_j ||w_i - w_j||_2 (the geometric median minimises this sum), low -> prune."""
    return {n: torch.cdist(w.detach().double().flatten(1)[None], w.detach().double().flatten(1)[None])[0].sum(1)
            for n, w in ctx.params.items()}
