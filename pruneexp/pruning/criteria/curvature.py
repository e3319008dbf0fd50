"""Second-order criteria: second-order Taylor, Optimal Brain Damage, layer-wise Optimal Brain Surgeon."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from pruneexp.config import CriterionConfig
from pruneexp.errors import PruneexpError
from pruneexp.pruning.criteria import ScoreContext, Scored, Scores, register_criterion
from pruneexp.pruning.criteria.common import batch_gradients, each_layer_input, hvps, modules_by_weight, scoring_mode
from pruneexp.pruning.masks import MaskSet


@register_criterion("taylor2", granularities=("weight", "channel", "nm", "block"))
def taylor2(ctx: ScoreContext) -> Scores:
    """Second-order Taylor importance (Molchanov et al. 2019, Eq. 5): removing group G changes the
    loss by -g_G.w_G + 1/2 w_G^T H_GG w_G; s_G = (g_G.w_G - 1/2 w_G^T H_GG w_G)^2 with g the mean
    gradient and H approximated by the empirical Fisher of the scoring batches,
    w_G^T H_GG w_G = mean_b (g_{b,G}.w_G)^2."""
    first = {n: 0.0 for n in ctx.params}
    second = {n: 0.0 for n in ctx.params}
    count = 0
    for g, _, _ in batch_gradients(ctx):
        for n, w in ctx.params.items():
            c = ctx.granularity.reduce((g[n] * w.detach()).double(), "sum")
            first[n] = first[n] + c
            second[n] = second[n] + c.square()
        count += 1
    return {n: (first[n] / count - 0.5 * second[n] / count).square() for n in ctx.params}


def hutchinson_curvature(ctx: ScoreContext, probes: int) -> dict[str, Tensor]:
    """Per group G: w_G^T H_GG w_G, by Hutchinson's estimator (Hutchinson 1990) with probes
    z = w * s, s a Rademacher sign per group (broadcast over the group's weights):
    E[sum_{q in G} z_q (H z)_q] = w_G^T H_GG w_G, since signs of different groups are independent.
    At weight granularity this is h_qq w_q^2, the Hessian diagonal estimate. H is the Hessian of the
    mean scoring loss; the signs come from a generator seeded by the run seed."""
    gen = torch.Generator().manual_seed(ctx.seed)
    gran = ctx.granularity
    zs = []
    for _ in range(probes):
        signs = {n: torch.randint(0, 2, gran.group_shape(p.shape), generator=gen) * 2 - 1 for n, p in ctx.params.items()}
        zs.append({n: p.detach() * gran.expand(signs[n], p.shape).to(p) for n, p in ctx.params.items()})
    hzs = hvps(ctx, zs)
    return {n: sum(gran.reduce((z[n] * hz[n]).double(), "sum") for z, hz in zip(zs, hzs)) / probes for n in ctx.params}


def fisher_curvature(ctx: ScoreContext) -> dict[str, Tensor]:
    """Per group G: w_G^T F_GG w_G = mean_i (g_{i,G} . w_G)^2, F the empirical Fisher of the scoring
    samples, per-sample gradients g_i from torch.func.vmap(grad). At weight granularity F_qq w_q^2."""
    params = {n: p.detach() for n, p in ctx.params.items()}

    def loss(ps, x, y):
        return ctx.loss_fn(functional_call(ctx.model, ps, (x[None],)), y[None])

    total = {n: 0.0 for n in params}
    count = 0
    with scoring_mode(ctx.model):
        for x, y in ctx.batches():
            per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
            for n, w in params.items():
                contrib = vmap(lambda g: ctx.granularity.reduce((g * w).double(), "sum"))(per_sample[n])
                total[n] = total[n] + contrib.square().sum(0)
            count += len(x)
    return {n: t / count for n, t in total.items()}


@dataclass
class ObdConfig(CriterionConfig):
    variant: str = ""  # "" or fisher: empirical Fisher curvature; hutchinson: Hessian by Rademacher probes
    probes: int = 8  # Hutchinson probes


@register_criterion("obd", granularities=("weight", "channel", "nm", "block"), choices={"variant": ("fisher", "hutchinson")},
                    config=ObdConfig)
def obd(ctx: ScoreContext) -> Scores:
    """Optimal Brain Damage (LeCun, Denker & Solla 1990): s_q = 1/2 h_qq w_q^2, h_qq the Hessian
    diagonal; for a group G the same quadratic model of removing it, s_G = 1/2 w_G^T H_GG w_G (the
    group's own curvature block rather than a sum of diagonal terms, which ignores the strong
    coupling of a neuron's weights). H is the empirical Fisher (criterion.variant=fisher, the
    default: exact, no sampling noise) or the Hessian through Hutchinson's estimator with
    criterion.probes Rademacher probes (criterion.variant=hutchinson; unbiased, but with few probes
    its noise from the other groups' cross terms blurs the ranking, see scripts/oracle.py)."""
    if ctx.cfg.variant == "hutchinson":
        return {n: 0.5 * c for n, c in hutchinson_curvature(ctx, int(ctx.cfg.probes)).items()}
    return {n: 0.5 * c for n, c in fisher_curvature(ctx).items()}


def layer_hessians(ctx: ScoreContext, damping: float, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """H = X^T X / N + damping * mean(diag) * I per prunable layer, X its inputs over the scoring
    batches (the Hessian of the layer's squared output error; Frantar & Alistarh 2022), accumulated
    in `dtype` (SparseGPT's reference: float32)."""
    sums = {n: torch.zeros(p[0].numel(), p[0].numel(), dtype=dtype, device=p.device) for n, p in ctx.params.items()}
    counts = dict.fromkeys(ctx.params, 0)

    def accumulate(n: str, rows: Tensor) -> None:
        rows = rows.to(dtype)
        sums[n].addmm_(rows.T, rows)
        counts[n] += len(rows)

    each_layer_input(ctx, accumulate)
    out = {}
    for n, s in sums.items():
        h = s / counts[n]
        out[n] = h + damping * h.diagonal().mean().clamp_min(1e-12) * torch.eye(len(h), dtype=h.dtype, device=h.device)
    return out


def obs_correction(w: Tensor, keep: Tensor, h: Tensor) -> Tensor:
    """Rows of `w` with the masked entries removed and the kept ones moved by the optimal
    (multi-weight) OBS correction: per row, minimise (w' - w)^T H (w' - w) subject to w'_P = 0,
    whose solution is w'_K = H_KK^-1 (H w)_K. Hand-written per row (each row has its own kept set)."""
    rows = w.detach().double().reshape(w.shape[0], -1)
    keep = keep.reshape(rows.shape)
    hw = rows @ h  # h is symmetric: (H w_r) for every row r
    new = torch.zeros_like(rows)
    for r in range(rows.shape[0]):
        k = keep[r]
        if k.all():
            new[r] = rows[r]
        elif k.any():
            new[r, k] = torch.linalg.solve(h[k][:, k], hw[r, k])
    return new.reshape(w.shape).to(w.dtype)


@dataclass
class ObsConfig(CriterionConfig):
    damping: float = 0.01  # relative damping of the layer Hessian: lambda = damping * mean diag(H)


@register_criterion("obs", granularities=("weight", "nm", "block"), config=ObsConfig, reads="layer_inputs")
def obs(ctx: ScoreContext) -> Scored:
    """Layer-wise Optimal Brain Surgeon (Hassibi & Stork 1993, "Second order derivatives for network
    pruning: Optimal Brain Surgeon"; layer-wise as in Dong et al. 2017 and Frantar & Alistarh 2022,
    "Optimal Brain Compression"): with H = X X^T / N + damping (criterion.damping, relative to the
    mean diagonal) the Hessian of the layer's output error, s_q = w_q^2 / [H^-1]_qq, the output
    error added by removing w_q alone after the optimal correction of its row. This criterion
    CHANGES WEIGHTS: after selection, each row's kept weights get the OBS correction for its whole
    pruned set (`obs_correction`), before the masks are applied."""
    hessians = layer_hessians(ctx, float(ctx.cfg.damping))
    scores = {}
    for n, w in ctx.params.items():
        inv_diag = torch.cholesky_inverse(torch.linalg.cholesky(hessians[n])).diagonal()
        scores[n] = (w.detach().double().reshape(w.shape[0], -1).square() / inv_diag).reshape(w.shape)

    def update(model: nn.Module, masks: MaskSet) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n in ctx.params:
                params[n].copy_(obs_correction(params[n], masks[n], hessians[n]))

    return Scored(scores, update)
