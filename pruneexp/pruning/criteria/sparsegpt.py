"""SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned
in One-Shot"), the reference `sparsegpt.py` of IST-DASLab/sparsegpt, on CPU and CUDA.

Per layer, with X its calibration inputs (n rows):

    H = 2 X^T X / n;  dead inputs (H_jj = 0): H_jj = 1 and W[:, j] = 0;  H += 0.01 * mean(diag H) * I
    U = chol(H^-1)^T (upper), so row q of U carries the OBS update for column q given columns > q
    for each block of B = 128 columns (i1..i2):
        the mask of the block: over ALL rows at once, the entries with the smallest w^2 / U_qq^2
        (the OBS error of removing them) -- adaptive per block, not per row;
        for N:M: in each run of M columns, per row, the M - N smallest w^2 / U_qq^2;
        column by column: q = w with the masked entries zeroed, err = (w - q) / U_qq,
        the block's later columns -= err U[q, q+1:i2]             (the exact OBS update)
    and the later blocks -= Err U[i1:i2, i2:]                        (lazy batched update)

The first column is pruned by exactly OBS's optimal update (w -= w_q / [H^-1]_qq * H^-1 e_q);
later columns by OBS restricted to the columns not yet visited. The Hessian is the existing layer
Hessian of `obs` (`layer_hessians`, same inputs, same accumulation). The mask chosen here is handed
to the selector as 0/1 scores, which selects exactly it when the layer's target matches (layerwise
scope, or N:M); the updated weights are written after selection. If the selector chose another mask
(a rule it applies on top), the kept weights get the exact OBS correction for that mask instead.
The per-block counts are chosen so that the layer loses exactly the selector's count
(round(sparsity * numel), spread over blocks by largest remainder); the reference's threshold
`tmp <= sort(tmp)[int(numel * sparsity)]` differs from it by at most a tie or one weight per block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pruneexp.config import CriterionConfig
from pruneexp.errors import PruneexpError
from pruneexp.pruning.criteria import ScoreContext, Scored, register_criterion
from pruneexp.pruning.criteria.curvature import layer_hessians, obs_correction
from pruneexp.pruning.masks import MaskSet
from pruneexp.pruning.select import n_to_keep


PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class SparseGptConfig(CriterionConfig):
    """SparseGPT's options (the reference's --percdamp, --blocksize) and the arithmetic's precision."""

    damping: float = 0.01  # percdamp: lambda = damping * mean diag(H)
    blocksize: int = 128  # columns per lazy-update block (B)
    precision: str = "float32"  # the Hessian and the OBS updates: float32 as the reference | float64


def prepare_hessian(h: Tensor, w: Tensor, damping: float) -> tuple[Tensor, Tensor]:
    """(U, W): the upper Cholesky factor of the damped inverse Hessian, and W with the columns of
    dead inputs zeroed (their H_jj set to 1 first), as the reference does."""
    h = h.clone()
    w = w.clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h = damped(h, damping)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(hinv, upper=True), w


def damped(h: Tensor, damping: float) -> Tensor:
    """H + damping * mean(diag H) * I."""
    return h + damping * h.diagonal().mean() * torch.eye(len(h), dtype=h.dtype, device=h.device)


def block_counts(numel_rows: int, columns: int, blocksize: int, prune_total: int) -> list[int]:
    """Weights to prune in each block of `blocksize` columns: proportional to its size, rounded by
    largest remainder so that they add up to `prune_total`."""
    sizes = [min(blocksize, columns - i) * numel_rows for i in range(0, columns, blocksize)]
    exact = [prune_total * s / (numel_rows * columns) for s in sizes]
    counts = [int(e) for e in exact]
    for i in sorted(range(len(sizes)), key=lambda i: (-(exact[i] - counts[i]), i))[: prune_total - sum(counts)]:
        counts[i] += 1
    return counts


def sparsegpt_prune(w: Tensor, h: Tensor, *, sparsity: float = 0.0, prune_n: int = 0, prune_m: int = 0,
                    blocksize: int = 128, damping: float = 0.01, alive: Tensor | None = None,
                    mask: Tensor | None = None, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """SparseGPT on one weight `w` [rows, columns] with layer Hessian `h` (= X^T X / n up to scale):
    returns (new weights, keep mask). `prune_n` of every `prune_m` columns per row are pruned when
    prune_n > 0, else `sparsity` of the layer (adaptive mask per block); `alive` False entries are
    pruned whatever their score; `mask` (keep mask) fixes the mask instead (the reference's `mask`).
    Computed in `dtype` (float32 as the reference; float64 for a check at higher precision)."""
    w = w.detach().to(dtype)
    rows, columns = w.shape
    u, w = prepare_hessian(h.to(dtype), w, damping)
    # Worked on transposed ([columns, rows]): column q of W is a contiguous row, so the per-column
    # rank-1 update of the block's later columns is one in-place addr_ over contiguous memory (1.6x
    # faster on CPU than the update on W's column slices, and no temporary).
    wt = w.T.contiguous()
    prunedt = torch.zeros_like(wt, dtype=torch.bool) if mask is None else ~mask.bool().T.contiguous()
    deadt = torch.zeros_like(prunedt) if alive is None else ~alive.bool().T.contiguous()
    counts = None
    if mask is None and prune_n == 0:
        counts = block_counts(rows, columns, blocksize, rows * columns - n_to_keep(rows * columns, sparsity))
    for b, i1 in enumerate(range(0, columns, blocksize)):
        i2 = min(i1 + blocksize, columns)
        w1 = wt[i1:i2].clone()  # [B, rows]
        u1 = u[i1:i2, i1:i2]
        d = u1.diagonal()
        err1 = torch.zeros_like(w1)
        p1 = prunedt[i1:i2].clone()
        if counts is not None:  # the block's count of smallest w^2 / U_qq^2, over all rows, in W's row-major order
            tmp = torch.where(deadt[i1:i2], float("-inf"), w1.square() / d[:, None].square())
            order = torch.sort(tmp.T.flatten(), stable=True).indices[: counts[b]]
            chosen = torch.zeros(rows * (i2 - i1), dtype=torch.bool, device=w.device)
            chosen[order] = True
            p1 |= chosen.view(rows, i2 - i1).T
        for i in range(i2 - i1):
            if prune_n and i % prune_m == 0:  # in each run of M columns, per row, the M - N smallest w^2 / U_qq^2
                tmp = w1[i:i + prune_m].T.square() / d[i:i + prune_m].square()
                tmp = torch.where(deadt[i1 + i:i1 + i + prune_m].T, float("-inf"), tmp)
                idx = torch.sort(tmp, dim=1, stable=True).indices[:, :prune_n]
                p1[i:i + prune_m].scatter_(0, idx.T, True)
            col = w1[i]
            q = torch.where(p1[i], torch.zeros_like(col), col)
            e = (col - q) / d[i]
            w1[i:].addr_(u1[i, i:], e, alpha=-1)  # the block's later columns -= err U[q, q:]
            w1[i] = q
            err1[i] = e
        wt[i1:i2] = w1
        prunedt[i1:i2] = p1
        wt[i2:] -= u[i1:i2, i2:].T @ err1  # the later blocks -= Err U[i1:i2, i2:]
    return wt.T.contiguous(), ~prunedt.T.contiguous()


@register_criterion("sparsegpt", granularities=("weight", "nm"), config=SparseGptConfig, scopes=("layerwise",),
                    reads="layer_inputs")
def sparsegpt(ctx: ScoreContext) -> Scored:
    """SparseGPT (Frantar & Alistarh 2023): OBS pruning column block by column block with lazy
    updates and an adaptive mask (module docstring). CHANGES WEIGHTS: the updated weights are
    written after selection. Use prune.scope=layerwise (weight) or prune.granularity=nm."""
    gran = ctx.granularity
    if gran.kind == "weight" and ctx.targets is None:
        raise PruneexpError("sparsegpt chooses its mask per layer: use prune.scope=layerwise (or prune.granularity=nm).")
    if ctx.cfg.precision not in PRECISIONS:
        raise PruneexpError(f"criterion.precision={ctx.cfg.precision!r} is not one of {', '.join(PRECISIONS)}.")
    dtype = PRECISIONS[ctx.cfg.precision]
    hessians = layer_hessians(ctx, 0.0, dtype)
    scores, updated = {}, {}
    for n, p in ctx.params.items():
        rows = p.detach().reshape(p.shape[0], -1)
        alive = ctx.masks[n].reshape(rows.shape)
        if gran.kind == "nm":
            new, keep = sparsegpt_prune(rows, hessians[n], prune_n=gran.m - gran.n, prune_m=gran.m,
                                        blocksize=int(ctx.cfg.blocksize), damping=float(ctx.cfg.damping), alive=alive, dtype=dtype)
        else:
            new, keep = sparsegpt_prune(rows, hessians[n], sparsity=ctx.targets[n], blocksize=int(ctx.cfg.blocksize),
                                        damping=float(ctx.cfg.damping), alive=alive, dtype=dtype)
        scores[n] = keep.double().reshape(p.shape)
        updated[n] = (new.reshape(p.shape).to(p.dtype), keep.reshape(p.shape))

    def update(model: nn.Module, masks: MaskSet) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, (new, keep) in updated.items():
                if torch.equal(masks[n].cpu(), keep.cpu()):
                    params[n].copy_(new)
                else:  # the selector chose another mask: the exact OBS correction for it
                    params[n].copy_(obs_correction(params[n], masks[n], damped(hessians[n].double(), float(ctx.cfg.damping))))

    return Scored(scores, update)
