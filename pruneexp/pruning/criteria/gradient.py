"""Gradient-based criteria: first-order Taylor, SNIP, GraSP, SynFlow."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from pruneexp.config import CriterionConfig
from pruneexp.pruning.channels import following_batchnorm
from pruneexp.pruning.masks import owner_name
from pruneexp.pruning.criteria import ScoreContext, Scores, register_criterion
from pruneexp.pruning.criteria.common import batch_gradients, hvp, mean_gradient, scoring_mode


@dataclass
class TaylorConfig(CriterionConfig):
    variant: str = ""  # "" or weight: (sum g w)^2 per group; activation: |mean a dL/da| per unit


@register_criterion("taylor", granularities=("weight", "channel", "nm", "block"), variants={"activation": ("channel",)},
                    choices={"variant": ("weight", "activation")}, config=TaylorConfig)
def taylor(ctx: ScoreContext) -> Scores:
    """First-order Taylor importance (Molchanov et al. 2019, "Importance Estimation for Neural
    Network Pruning"): the squared first-order loss change of removing a group, accumulated over
    the scoring batches b: s_G = sum_b (sum_{q in G} g_{b,q} w_q)^2 (per weight (g w)^2).
    criterion.variant=activation: Molchanov et al. 2017 ("Pruning Convolutional Neural Networks for
    Resource Efficient Inference"), per feature map |mean(a * dL/da)|, see `taylor_activation`."""
    if ctx.cfg.variant == "activation":
        return taylor_activation(ctx)
    total = {n: torch.zeros(ctx.granularity.group_shape(p.shape), dtype=torch.float64, device=p.device) for n, p in ctx.params.items()}
    for g, _, _ in batch_gradients(ctx):
        for n, w in ctx.params.items():
            total[n] += ctx.granularity.reduce((g[n] * w.detach()).double(), "sum").square()
    return total


def taylor_activation(ctx: ScoreContext) -> Scores:
    """Molchanov et al. 2017: Theta(z_c) = mean over samples of |mean over positions of a * dL/da|,
    a = relu(bn(layer(x))) the unit's activation; computed as relu(z) * dL/dz on the pre-ReLU z,
    which equals a * dL/da. Per-sample gradients: the batch-mean loss is scaled by the batch size."""
    modules = dict(ctx.model.named_modules())
    bn = following_batchnorm(ctx.model)
    total = {n: torch.zeros(p.shape[0], dtype=torch.float64, device=p.device) for n, p in ctx.params.items()}
    outputs: dict[str, torch.Tensor] = {}
    hooks = []
    for n in ctx.params:
        layer = owner_name(n)
        def keep(_m, _i, out, n=n):
            outputs[n] = out
        hooks.append(modules[bn.get(layer, layer)].register_forward_hook(keep))
    try:
        with scoring_mode(ctx.model):
            for x, y in ctx.batches():
                loss = ctx.loss_fn(ctx.model(x), y) * len(x)
                grads = torch.autograd.grad(loss, [outputs[n] for n in ctx.params])
                for (n, z), dz in zip(((n, outputs[n]) for n in ctx.params), grads):
                    contrib = (torch.relu(z.detach()) * dz).double()
                    contrib = contrib.flatten(2).mean(2) if contrib.dim() > 2 else contrib
                    total[n] += contrib.abs().sum(0)
    finally:
        for h in hooks:
            h.remove()
    return total


@register_criterion("snip", granularities=("weight", "channel", "nm", "block"))
def snip(ctx: ScoreContext) -> Scores:
    """SNIP connection sensitivity (Lee et al. 2019, "SNIP: Single-shot Network Pruning based on
    Connection Sensitivity"): s_q = |g_q w_q|, g the loss gradient over the scoring batches
    (the paper normalises by the sum over all weights, which leaves the ranking unchanged)."""
    g = mean_gradient(ctx)
    return {n: (g[n] * w.detach()).abs() for n, w in ctx.params.items()}


@register_criterion("grasp", granularities=("weight", "channel", "nm", "block"))
def grasp(ctx: ScoreContext) -> Scores:
    """GraSP (Wang et al. 2020, "Picking Winning Tickets Before Training by Preserving Gradient
    Flow"): S(-w) = -w * (H g), H the loss Hessian, g the gradient, Hg by a Hessian-vector product
    (torch.func forward-over-reverse). The paper removes the weights with the *largest* S, so the
    keep-score returned here is -S = w * (H g)."""
    g = mean_gradient(ctx)
    hg = hvp(ctx, g)
    return {n: w.detach() * hg[n] for n, w in ctx.params.items()}


@register_criterion("synflow", granularities=("weight", "channel", "nm", "block"), at_init_iterations=100)
def synflow(ctx: ScoreContext) -> Scores:
    """SynFlow (Tanaka et al. 2020, "Pruning neural networks without any data by iteratively
    conserving synaptic flow"): on a float64 copy of the network with every parameter replaced by
    its absolute value and BatchNorm in eval mode, R = 1^T f(1) for an all-ones input, and
    s_q = |dR/dw_q * w_q|. Data-free (only the input shape of a scoring batch is read). The
    iterative schedule belongs to the schedules; this is one scoring step."""
    x, _ = next(iter(ctx.batches()))
    net = copy.deepcopy(ctx.model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    params = dict(net.named_parameters())
    chosen = [params[n] for n in ctx.params]
    r = net(torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)).sum()
    grads = torch.autograd.grad(r, chosen)
    return {n: (gr * w).detach().abs() for n, gr, w in zip(ctx.params, grads, chosen)}
