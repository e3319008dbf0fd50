"""Helpers shared by the criteria: scoring mode, gradients over the scoring batches, Hessian-vector
products (torch.func), and per-unit activation statistics collected by forward hooks."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneexp.errors import PruneexpError
from pruneexp.pruning.channels import following_batchnorm
from pruneexp.pruning.masks import owner_name
from pruneexp.pruning.criteria import ScoreContext


@contextlib.contextmanager
def scoring_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode while scoring (BatchNorm uses its running statistics and never updates them, no
    dropout), the previous mode restored after: scoring must not change the model."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def batch_gradients(ctx: ScoreContext, create_graph: bool = False) -> Iterator[tuple[dict[str, Tensor], Tensor, Tensor]]:
    """For each scoring batch: (dL/dw for every prunable weight, x, y), L the mean batch loss."""
    names, params = list(ctx.params), list(ctx.params.values())
    with scoring_mode(ctx.model):
        for x, y in ctx.batches():
            loss = ctx.loss_fn(ctx.model(x), y)
            grads = torch.autograd.grad(loss, params, create_graph=create_graph)
            yield dict(zip(names, grads)), x, y


def mean_gradient(ctx: ScoreContext) -> dict[str, Tensor]:
    """g = mean over the scoring batches of the batch-loss gradient."""
    total, count = {n: torch.zeros_like(p) for n, p in ctx.params.items()}, 0
    for g, _, _ in batch_gradients(ctx):
        for n in total:
            total[n] += g[n]
        count += 1
    return {n: t / count for n, t in total.items()}


def hvps(ctx: ScoreContext, vectors: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """[H v for v in vectors], H the Hessian of the mean scoring loss w.r.t. the prunable weights,
    averaged over the scoring batches. Pearlmutter's trick by double backward: per batch the
    gradient graph is built once (create_graph) and reused for every vector, which is what makes
    Hutchinson's many probes affordable (torch.func's jvp-of-grad rebuilds it per vector)."""
    names, params = list(ctx.params), list(ctx.params.values())
    totals = [{n: torch.zeros_like(p) for n, p in ctx.params.items()} for _ in vectors]
    count = 0
    with scoring_mode(ctx.model):
        for x, y in ctx.batches():
            g = torch.autograd.grad(ctx.loss_fn(ctx.model(x), y), params, create_graph=True)
            for total, v in zip(totals, vectors):
                hv = torch.autograd.grad(g, params, grad_outputs=[v[n] for n in names], retain_graph=True)
                for n, h in zip(names, hv):
                    total[n] += h
            count += 1
    return [{n: t / count for n, t in total.items()} for total in totals]


def hvp(ctx: ScoreContext, vector: dict[str, Tensor]) -> dict[str, Tensor]:
    """H v for one vector (see `hvps`)."""
    return hvps(ctx, [vector])[0]


def modules_by_weight(model: nn.Module, names: list[str]) -> dict[str, nn.Module]:
    """Prunable weight name -> the module that owns it."""
    modules = dict(model.named_modules())
    return {n: modules[owner_name(n)] for n in names}


def unit_outputs(ctx: ScoreContext, reduce: Callable[[Tensor], Tensor]) -> tuple[dict[str, Tensor], Tensor]:
    """Per-sample statistics of every prunable layer's units over the scoring batches.

    A unit's activation is taken after the BatchNorm that follows the layer (if any) and a ReLU:
    relu(bn(layer(x))), shape [batch, units, *spatial]; `reduce` maps it to [batch, units] (e.g. a
    global average pool). Returns ({weight name: [samples, units]}, labels [samples])."""
    names = list(ctx.params)
    modules = dict(ctx.model.named_modules())
    bn = following_batchnorm(ctx.model)
    stats: dict[str, list[Tensor]] = {n: [] for n in names}
    hooks = []
    for n in names:
        layer = owner_name(n)
        where = modules[bn.get(layer, layer)]
        hooks.append(where.register_forward_hook(
            lambda _m, _i, out, n=n: stats[n].append(reduce(torch.relu(out.detach())).double())))
    labels = []
    try:
        with scoring_mode(ctx.model), torch.no_grad():
            for x, y in ctx.batches():
                ctx.model(x)
                labels.append(y)
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.cat(v) for n, v in stats.items()}, torch.cat(labels)


def spatial_mean(a: Tensor) -> Tensor:
    """Global average pool of [batch, units, *spatial] -> [batch, units]."""
    return a.flatten(2).mean(2) if a.dim() > 2 else a


def greedy_redundancy(similarity: Tensor) -> Tensor:
    """Scores from a unit-by-unit similarity matrix, greedily: repeatedly remove the remaining unit
    most similar to another remaining unit; a unit's score is minus that similarity when it was
    removed. Similarities to removed units no longer count, so of two duplicates exactly one is
    scored as redundant. The removal similarities never increase, so ranking by score replays the
    greedy order. Hand-written: no library offers this greedy elimination."""
    u = similarity.shape[0]
    sim = similarity.double().clone()
    sim.fill_diagonal_(float("-inf"))
    remaining = torch.ones(u, dtype=torch.bool, device=sim.device)
    score = torch.empty(u, dtype=torch.float64, device=sim.device)
    last = 1.0  # the last unit (or a one-unit layer) is scored as if redundant at most as much as the one before
    for _ in range(u):
        alive = remaining.nonzero().flatten()
        red = sim[alive].amax(1)  # each remaining unit's highest similarity to another remaining one
        j = int(torch.argmax(red))  # first index among equals: deterministic
        i, value = int(alive[j]), float(red[j])
        last = min(value, last) if value != float("-inf") else last
        score[i] = -last
        remaining[i] = False
        sim[:, i] = float("-inf")  # similarity to a removed unit no longer counts
    return score


def layer_inputs(layer: nn.Module, x: Tensor) -> Tensor:
    """The layer's input as rows [samples, fan_in] of its matrix product with weight.view(out, -1):
    x itself for a Linear, the unfolded patches (im2col, F.unfold) for a Conv2d."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(layer, nn.Conv2d) and layer.groups == 1 and isinstance(layer.padding, tuple):
        cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    raise PruneexpError(f"this criterion reads layer inputs of Linear and (ungrouped, explicitly padded) Conv2d layers, not "
                        f"{type(layer).__name__}; exclude it with prune.exclude.")


class _AllLayersSeen(Exception):
    """Raised by the last scoring hook of a forward: every scored layer has had its input, so the
    rest of the forward (the last layer's product, later blocks, the LM head) would be thrown away."""


def each_layer_input(ctx: ScoreContext, consume: Callable[[str, Tensor], None]) -> None:
    """Run the scoring (calibration) batches through the model (or `ctx.forward`: one block on its
    cached inputs) in scoring mode, without gradients,
    and hand every prunable layer's input rows (`layer_inputs`) to `consume(weight name, rows)` as
    they pass. The layer-wise statistics of OBS (X^T X) and Wanda (||X_j||) are built on it.

    The first batch runs whole and counts the hooked calls one forward makes (a layer called twice
    counts twice); every later forward stops at that count, right after the last scored layer's
    input is consumed: nothing computed after it reaches a statistic (the reference codes run it
    and discard it). In the blocks engine that is the block's last product; on a whole model, also
    every later block and the LM head."""
    layers = modules_by_weight(ctx.model, list(ctx.params))
    seen = dict.fromkeys(ctx.params, 0)
    calls = [0]
    per_forward: int | None = None

    def hook(n: str) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def take(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            rows = layer_inputs(module, args[0].detach())
            seen[n] += len(rows)
            consume(n, rows)
            calls[0] += 1
            if calls[0] == per_forward:
                raise _AllLayersSeen
        return take

    handles = [layers[n].register_forward_pre_hook(hook(n)) for n in ctx.params]
    run = ctx.forward or ctx.model
    try:
        with scoring_mode(ctx.model), torch.no_grad():
            for x, _ in ctx.batches():
                calls[0] = 0
                try:
                    run(x)
                except _AllLayersSeen:
                    pass
                per_forward = per_forward or calls[0]
    finally:
        for h in handles:
            h.remove()
    unseen = [n for n, k in seen.items() if not k]
    if unseen:
        raise PruneexpError(f"no input reached {', '.join(unseen)} during scoring (a module applied functionally, e.g. "
                            "MultiheadAttention's out_proj, or no scoring batch); exclude it with prune.exclude.")
