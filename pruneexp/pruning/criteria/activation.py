"""Data-driven unit criteria on activations collected by forward hooks over the scoring batches.
Each scores output units (neurons, feature maps), so each supports channel granularity only. A
unit's activation is relu(bn(layer(x))) (see `common.unit_outputs`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

import torch
from torch import Tensor

from pruneexp.config import CriterionConfig
from pruneexp.pruning.criteria import ScoreContext, Scores, register_criterion
from pruneexp.pruning.criteria.common import greedy_redundancy, spatial_mean, unit_outputs


@register_criterion("activation", granularities=("channel",))
def activation(ctx: ScoreContext) -> Scores:
    """s_c = mean over samples and positions of |a_c| (low -> prune; e.g. Polyak & Wolf 2015,
    "Channel-level acceleration of deep face representations")."""
    stats, _ = unit_outputs(ctx, lambda a: spatial_mean(a.abs()))
    return {n: s.mean(0) for n, s in stats.items()}


@register_criterion("apoz", granularities=("channel",))
def apoz(ctx: ScoreContext) -> Scores:
    """Average Percentage of Zeros (Hu et al. 2016, "Network Trimming"): APoZ_c = mean over samples
    and positions of 1[a_c = 0] after the ReLU; high -> prune, so s_c = 1 - APoZ_c."""
    stats, _ = unit_outputs(ctx, lambda a: spatial_mean((a == 0).double()))
    return {n: 1.0 - s.mean(0) for n, s in stats.items()}


def histogram_entropy(values: Tensor, bins: int) -> Tensor:
    """H = -sum_k p_k log p_k of the histogram (`bins` equal bins over [min, max]) of each row."""
    out = torch.zeros(values.shape[0], dtype=torch.float64)
    for i, v in enumerate(values.double().cpu()):
        p = torch.histc(v, bins=bins, min=float(v.min()), max=float(v.max()))
        p = p[p > 0] / p.sum()
        out[i] = -(p * p.log()).sum()
    return out


@dataclass
class EntropyConfig(CriterionConfig):
    source: str = "activations"  # activations | weights
    options: Dict[str, Any] = field(default_factory=dict)  # bins


@register_criterion("entropy", granularities=("channel",), choices={"source": ("activations", "weights")}, config=EntropyConfig)
def entropy(ctx: ScoreContext) -> Scores:
    """Entropy pruning (Luo & Wu 2017, "An Entropy-based Pruning Method for CNN Compression"): the
    globally average-pooled activation of unit c over the scoring samples is binned into
    criterion.options.bins (default 32) equal bins, s_c = H = -sum_k p_k log p_k; a unit whose
    output hardly varies carries little information: low -> prune. criterion.source=weights scores
    the entropy of the histogram of the unit's own weights instead, with the same direction (a unit
    whose weights take few distinct values is scored low)."""
    bins = int(ctx.cfg.options.get("bins", 32))
    if ctx.cfg.source == "weights":
        return {n: histogram_entropy(w.detach().flatten(1), bins).to(w.device) for n, w in ctx.params.items()}
    stats, _ = unit_outputs(ctx, spatial_mean)
    return {n: histogram_entropy(s.T, bins).to(ctx.params[n].device) for n, s in stats.items()}


@register_criterion("correlation", granularities=("channel",))
def correlation(ctx: ScoreContext) -> Scores:
    """Redundancy from the layer's activation correlations (in the spirit of Sun et al. 2015 and
    the correlation-based filter pruning of Suau et al. 2020): with rho_ij the Pearson correlation
    of the pooled activations of units i and j over the scoring samples, greedily remove the unit
    most correlated (|rho|) with a remaining unit; s_i = -|rho| at removal. A constant (dead) unit
    is fully redundant (|rho| := 1). Of two duplicates exactly one goes."""
    stats, _ = unit_outputs(ctx, spatial_mean)
    out = {}
    for n, s in stats.items():
        rho = torch.corrcoef(s.T).abs()
        dead = s.std(0) == 0
        rho[dead, :] = 1.0
        rho[:, dead] = 1.0
        out[n] = greedy_redundancy(torch.nan_to_num(rho, nan=1.0))
    return out


@register_criterion("lda", granularities=("channel",))
def lda(ctx: ScoreContext) -> Scores:
    """Class discriminability of a unit (Tian et al. 2017/2018, "Deep LDA-pruned nets"): Fisher's
    ratio of the pooled activation a, s_c = sum_k n_k (mu_k - mu)^2 / sum_k sum_{i in k} (a_i - mu_k)^2
    (between-class over within-class scatter); a unit that does not separate classes: low -> prune."""
    stats, labels = unit_outputs(ctx, spatial_mean)
    out = {}
    for n, a in stats.items():
        classes = torch.unique(labels)
        mu = a.mean(0)
        between = torch.zeros_like(mu)
        within = torch.zeros_like(mu)
        for k in classes:
            ak = a[labels == k]
            between += len(ak) * (ak.mean(0) - mu).square()
            within += (ak - ak.mean(0)).square().sum(0)
        out[n] = between / within.clamp_min(1e-12)
    return out
