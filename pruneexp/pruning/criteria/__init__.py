"""Pruning criteria: small scoring functions registered by name (`criterion=magnitude`).

A criterion only scores: it maps each prunable weight name to a tensor of the weight's shape
(element scores) or of the group shape of the configured granularity (its own group scores, e.g.
Taylor's (sum g*w)^2 per channel), higher meaning more important to keep. The selector
(pruning/select.py) makes every thresholding decision. Each criterion declares the granularities it
can score (per variant where a variant changes them). Scoring never changes the model: weights,
buffers and train/eval mode are as before. The one exception is `obs`, whose weight correction is
returned as `Scored.update` and applied by the prune step after selection, with the new masks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from torch import Tensor, nn

from pruneexp.errors import PruneexpError
from pruneexp.pruning.groups import Granularity
from pruneexp.pruning.masks import MaskSet
from pruneexp.registry import Registry, import_modules

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
    granularity: Granularity = field(default_factory=Granularity)
    extra: dict[str, Any] = field(default_factory=dict)
    # the targets the selector will be asked for: {name: sparsity} per scored layer (layerwise
    # scope; None otherwise), for criteria that choose their own mask (sparsegpt)
    targets: dict[str, float] | None = None
    # how one scoring batch is run (None: model(x)). Block-by-block post-training pruning hands the
    # criteria one block's cached inputs and runs only that block (pruneexp.pruning.blocks).
    forward: Callable[[Any], Any] | None = None


@dataclass
class Scored:
    """A criterion's answer: scores, and optionally a weight update applied after selection
    (`update(model, new_masks)`, before the masks are applied; only weight-correcting methods)."""

    scores: Scores
    update: Callable[[nn.Module, MaskSet], None] | None = None


Criterion = Callable[[ScoreContext], "Scores | Scored"]
CRITERIA: Registry[Criterion] = Registry("criterion")


def register_criterion(name: str, *, granularities: tuple[str, ...],
                       variants: dict[str, tuple[str, ...]] | None = None,
                       choices: dict[str, tuple[str, ...]] | None = None, config: type | None = None,
                       at_init_iterations: int = 1, scopes: tuple[str, ...] | None = None,
                       reads: str = "model") -> Callable[[Criterion], Criterion]:
    """Register a criterion with the granularities it can score; `variants` maps a
    `criterion.variant` value to the granularities of that variant when they differ; `choices`
    lists the values a string option the criterion reads may take (e.g. {"variant": ("fisher",
    "hutchinson")}), so a typo is refused before training instead of falling back to a default;
    `config` is the criterion's own config schema (a `pruneexp.config.CriterionConfig` subclass
    holding its options; None: the common keys only); `at_init_iterations` is how many rounds
    `schedule=at_init` prunes in by default (SynFlow: 100); `scopes` the prune.scope values it
    works under at weight granularity (None: any; SparseGPT chooses its own mask per layer); `reads`
    what it needs of the model: "weights" (nothing run), "layer_inputs" (each scored layer's inputs,
    through `each_layer_input`: one block at a time is enough) or "model" (outputs, losses, gradients)."""
    if reads not in ("weights", "layer_inputs", "model"):
        raise ValueError(f"criterion {name}: reads must be weights, layer_inputs or model, not {reads!r}")
    return CRITERIA.register(name, granularities=granularities, variants=variants or {}, choices=choices or {},
                             config=config, at_init_iterations=at_init_iterations, scopes=scopes, reads=reads)


def criterion_config(name: str, **values: Any) -> Any:
    """The typed config node of criterion `name` (its registered schema, see
    `register_criterion`), with `values` set: those among its options; the others are ignored, so
    one set of common values (batches, batch_size) serves every criterion."""
    from omegaconf import OmegaConf

    from pruneexp.config import CriterionConfig

    schema = CRITERIA.meta(name)["config"] or CriterionConfig
    own = {f.name for f in dataclasses.fields(schema)}
    return OmegaConf.merge(OmegaConf.structured(schema), {"name": name, **{k: v for k, v in values.items() if k in own}})


def supported_granularities(name: str, variant: str | None = None) -> tuple[str, ...]:
    """Granularities the criterion (in the given variant) can score."""
    meta = CRITERIA.meta(name)
    return meta["variants"].get(variant, meta["granularities"])


def score(name: str, ctx: ScoreContext) -> Scored:
    """Scores of the named criterion, one tensor per prunable weight, each the weight's shape or the
    group shape of `ctx.granularity`."""
    out = CRITERIA.get(name)(ctx)
    scored = out if isinstance(out, Scored) else Scored(out)
    for n, p in ctx.params.items():
        if n not in scored.scores:
            raise PruneexpError(f"criterion {name} gave no score for {n}.")
        shape = tuple(scored.scores[n].shape)
        if shape not in (tuple(p.shape), ctx.granularity.group_shape(p.shape)):
            raise ValueError(f"criterion {name} scored {n} with shape {shape}; expected {tuple(p.shape)} "
                             f"or {ctx.granularity.group_shape(p.shape)}")
    return scored


# Register the built-in criteria (one module per family).
import_modules(__name__)  # every module of this package registers its criteria: a new criterion is a new file
