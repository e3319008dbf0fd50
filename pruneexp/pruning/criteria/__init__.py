"""Pruning criteria: small scoring functions registered by name (`criterion=magnitude`).

A criterion only scores: it maps each prunable weight name to a tensor of the weight's shape,
higher meaning more important to keep. The selector (pruning/select.py) makes every thresholding
decision. Each criterion declares the granularities it can score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from torch import Tensor, nn

from pruneexp.pruning.masks import MaskSet
from pruneexp.registry import Registry

Scores = dict[str, Tensor]


@dataclass
class ScoreContext:
    """What a criterion may look at. `batches()` yields the scoring batches afresh each call."""

    model: nn.Module
    params: dict[str, nn.Parameter]  # the prunable weights, by name
    masks: MaskSet
    batches: Callable[[], Iterator[tuple[Tensor, Tensor]]]
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    cfg: Any  # the criterion's config node (CriterionConfig)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


Criterion = Callable[[ScoreContext], Scores]
CRITERIA: Registry[Criterion] = Registry("criterion")


def register_criterion(name: str, *, granularities: tuple[str, ...]) -> Callable[[Criterion], Criterion]:
    """Register a criterion with the granularities it can score."""
    return CRITERIA.register(name, granularities=granularities)


def supported_granularities(name: str) -> tuple[str, ...]:
    return CRITERIA.meta(name)["granularities"]


def score(name: str, ctx: ScoreContext) -> Scores:
    """Scores of the named criterion, one tensor per prunable weight, each the weight's shape."""
    scores = CRITERIA.get(name)(ctx)
    for n, p in ctx.params.items():
        if scores[n].shape != p.shape:
            raise ValueError(f"criterion {name} scored {n} with shape {tuple(scores[n].shape)} != {tuple(p.shape)}")
    return scores


# Register the built-in criteria (one module per family).
from pruneexp.pruning.criteria import magnitude  # noqa: E402,F401
