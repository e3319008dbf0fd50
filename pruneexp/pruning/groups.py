"""Granularities: how a weight tensor is cut into the groups that are kept or removed together.

- `weight`: every entry is its own group.
- `channel`: output unit of a Linear / output filter of a Conv, i.e. the slice `w[c, ...]`.
- `nm`: N:M along the input dimension: the weight viewed as rows `[out, in*kh*kw]`, each run of M
  consecutive entries of a row keeps exactly N (Mishra et al. 2021, NVIDIA 2:4 sparsity).
- `block`: `bh x bw` blocks of the row view `[out, in*kh*kw]` (edge blocks may be smaller).

Element scores (the weight's shape) reduce to group scores by `group_reduce` (sum, mean, l2); a
criterion may instead give group scores directly (the shape `group_shape` returns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pruneexp.errors import PruneexpError
from pruneexp.pruning.masks import layer_name

GRANULARITIES = ("weight", "channel", "nm", "block")
GROUP_REDUCE = ("sum", "mean", "l2")


@dataclass(frozen=True)
class Granularity:
    kind: str = "weight"
    n: int = 2  # nm: kept per group
    m: int = 4  # nm: group size
    block: tuple[int, int] = (4, 4)  # block: rows x columns of the row view

    @classmethod
    def from_cfg(cls, prune_cfg) -> "Granularity":
        """From the `prune` config node (granularity, n, m, block)."""
        return cls(str(prune_cfg.granularity), int(prune_cfg.n), int(prune_cfg.m), tuple(int(b) for b in prune_cfg.block))

    def group_shape(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the group-score grid of a weight of `shape` (nm groups are selected within,
        so their scores are element scores)."""
        if self.kind in ("weight", "nm"):
            return tuple(shape)
        if self.kind == "channel":
            return (shape[0],)
        bh, bw = self.block
        return (math.ceil(shape[0] / bh), math.ceil(math.prod(shape[1:]) / bw))

    def reduce(self, t: Tensor, how: str = "sum") -> Tensor:
        """Element tensor (the weight's shape) -> group tensor (`group_shape`), by sum, mean or l2."""
        if how not in GROUP_REDUCE:
            raise PruneexpError(f"Unknown prune.group_reduce '{how}'; known: {', '.join(GROUP_REDUCE)}.")
        if self.kind in ("weight", "nm"):
            return t
        if self.kind == "channel":
            rows = t.reshape(t.shape[0], -1)
            return {"sum": rows.sum(1), "mean": rows.mean(1), "l2": rows.norm(dim=1)}[how]
        x = t.reshape(1, 1, t.shape[0], -1)
        if how == "l2":
            x = x.square()
        # sum over each block of the zero-padded row view; mean divides by the block's true size
        s = F.avg_pool2d(x, self.block, ceil_mode=True, divisor_override=1)[0, 0]
        if how == "mean":
            s = s / F.avg_pool2d(torch.ones_like(x), self.block, ceil_mode=True, divisor_override=1)[0, 0]
        return s.sqrt() if how == "l2" else s

    def expand(self, g: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """Group tensor -> element tensor of `shape` (each element takes its group's value)."""
        if self.kind in ("weight", "nm"):
            return g.reshape(shape)
        if self.kind == "channel":
            return g.reshape(-1, *([1] * (len(shape) - 1))).expand(shape)
        bh, bw = self.block
        cols = math.prod(shape[1:])
        return g.repeat_interleave(bh, 0)[: shape[0]].repeat_interleave(bw, 1)[:, :cols].reshape(shape)

    def sizes(self, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """Number of elements in each group (group_shape)."""
        return self.reduce(torch.ones(shape), "sum")


def nm_keep(scores: Tensor, alive: Tensor, n: int, m: int, name: str = "") -> Tensor:
    """N:M mask: in every run of M consecutive entries of a row of the row view, keep the N
    highest-scored alive entries (ties to the earlier index, stable sort); pruned stay pruned."""
    rows = scores.reshape(scores.shape[0], -1)
    if rows.shape[1] % m:
        raise PruneexpError(f"prune.granularity=nm needs each row of {name or 'a layer'} ({rows.shape[1]} inputs) to be a multiple "
                            f"of prune.m={m}; exclude it with prune.exclude=['{layer_name(name)}'].")
    groups = rows.double().reshape(-1, m)
    groups = torch.where(alive.reshape(-1, m), groups, torch.tensor(float("-inf"), dtype=groups.dtype))
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, order[:, :n], True)
    return (keep & alive.reshape(-1, m)).reshape(scores.shape)
