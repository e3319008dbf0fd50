"""MaskSet: boolean keep-masks keyed by parameter name, and the choice of what is prunable.

A mask entry is True where the parameter is kept. The weights named in `MaskSet.weights` are the
prunable ones that sparsity is reported over; a MaskSet may also hold masks for other parameters
(a pruned channel's bias, the BatchNorm scale and shift that follow it) so that a masked model
and its physically shrunk twin compute the same function.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import Tensor, nn

from pruneexp.errors import PruneexpError

LAYER_TYPES: dict[str, tuple[type[nn.Module], ...]] = {
    "linear": (nn.Linear,),
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
}


def layer_weights(model: nn.Module, layer_types: Iterable[str] = ("linear", "conv")) -> dict[str, nn.Parameter]:
    """Weights of every layer of the given types, in module (= forward) order, keyed by parameter name."""
    unknown = set(layer_types) - set(LAYER_TYPES)
    if unknown:
        raise PruneexpError(f"Unknown prune.layer_types {sorted(unknown)}; known: {sorted(LAYER_TYPES)}.")
    types = tuple(t for name in layer_types for t in LAYER_TYPES[name])
    return {
        f"{mod_name}.weight" if mod_name else "weight": module.weight
        for mod_name, module in model.named_modules()
        if isinstance(module, types)
    }


def match_layers(names: list[str], pattern: str) -> list[str]:
    """Parameter names matched by a layer rule: a glob over names, or `@first` / `@last` in module order."""
    if pattern == "@first":
        return names[:1]
    if pattern == "@last":
        return names[-1:]
    return [n for n in names if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n.removesuffix(".weight"), pattern)]


def prunable_weights(
    model: nn.Module, layer_types: Iterable[str] = ("linear", "conv"), exclude: Iterable[str] = ()
) -> dict[str, nn.Parameter]:
    """The weights a run prunes: conv/linear weights (never biases or norms), minus excluded layers."""
    weights = layer_weights(model, layer_types)
    names = list(weights)
    excluded: set[str] = set()
    for pattern in exclude:
        hit = match_layers(names, pattern)
        if not hit:
            raise PruneexpError(f"prune.exclude pattern '{pattern}' matches no prunable layer; layers are: {', '.join(names)}.")
        excluded.update(hit)
    kept = {n: p for n, p in weights.items() if n not in excluded}
    if not kept:
        raise PruneexpError("prune.exclude leaves no layer to prune.")
    return kept


@dataclass
class SparsityReport:
    """Exact counts: over the prunable weights, and over every parameter of the model."""

    prunable: int  # number of prunable weights
    prunable_nonzero: int
    total: int  # every parameter of the model
    total_nonzero: int  # total minus masked-out entries (of any masked parameter)
    layers: dict[str, tuple[int, int]]  # prunable weight name -> (numel, kept)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.prunable_nonzero / self.prunable

    @property
    def sparsity_all(self) -> float:
        return 1.0 - self.total_nonzero / self.total


class MaskSet:
    """Keep-masks (bool tensors) keyed by parameter name; `weights` are the prunable ones."""

    def __init__(self, masks: Mapping[str, Tensor], weights: Iterable[str] | None = None):
        self.masks: dict[str, Tensor] = {k: v.bool() for k, v in masks.items()}
        self.weights: tuple[str, ...] = tuple(self.masks if weights is None else weights)
        missing = [w for w in self.weights if w not in self.masks]
        if missing:
            raise ValueError(f"weights without a mask: {missing}")

    @classmethod
    def dense(cls, params: Mapping[str, Tensor]) -> "MaskSet":
        """All-True masks for the given (prunable) parameters."""
        return cls({n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()})

    def __getitem__(self, name: str) -> Tensor:
        return self.masks[name]

    def __contains__(self, name: object) -> bool:
        return name in self.masks

    def clone(self) -> "MaskSet":
        return MaskSet({k: v.clone() for k, v in self.masks.items()}, self.weights)

    def to(self, device: torch.device | str) -> "MaskSet":
        return MaskSet({k: v.to(device) for k, v in self.masks.items()}, self.weights)

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> None:
        """Zero every masked-out entry of the model's parameters, in place."""
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            params[name].mul_(mask)

    def binder(self, model: nn.Module) -> "MaskApplier":
        """A fast re-applier for the training loop's hot path (one fused multiply per step)."""
        return MaskApplier(model, self)

    def report(self, model: nn.Module) -> SparsityReport:
        layers = {w: (self.masks[w].numel(), int(self.masks[w].sum())) for w in self.weights}
        masked_out = sum(int((~m).sum()) for m in self.masks.values())
        total = sum(p.numel() for p in model.parameters())
        return SparsityReport(
            prunable=sum(n for n, _ in layers.values()),
            prunable_nonzero=sum(k for _, k in layers.values()),
            total=total,
            total_nonzero=total - masked_out,
            layers=layers,
        )

    def state_dict(self) -> dict:
        return {"masks": {k: v.cpu() for k, v in self.masks.items()}, "weights": list(self.weights)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "MaskSet":
        return cls(state["masks"], state["weights"])

    def equal(self, other: "MaskSet") -> bool:
        return self.weights == other.weights and self.masks.keys() == other.masks.keys() and all(
            torch.equal(self.masks[k].cpu(), other.masks[k].cpu()) for k in self.masks
        )


class MaskApplier:
    """Re-applies a MaskSet after each optimizer step with one `torch._foreach_mul_` call, so a pruned
    weight stays exactly zero under momentum, Adam or weight decay, without forward hooks."""

    def __init__(self, model: nn.Module, masks: MaskSet):
        params = dict(model.named_parameters())
        pruned = [n for n, m in masks.masks.items() if not bool(m.all())]
        self.params = [params[n] for n in pruned]
        self.factors = [masks[n].to(device=params[n].device, dtype=params[n].dtype) for n in pruned]

    @torch.no_grad()
    def __call__(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.factors)
