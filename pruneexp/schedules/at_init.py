"""Pruning at initialisation: score the untrained network, prune to the target, train the sparse
network from that same initialisation (SNIP, Lee et al. 2019; GraSP, Wang et al. 2020; SynFlow,
Tanaka et al. 2020; random and magnitude at init as the baselines of Frankle et al. 2021,
"Pruning Neural Networks at Initialization: Why Are We Missing the Mark?").

With `iterations` n > 1 the pruning is iterative along SynFlow's exponential schedule:
for k = 1..n, score the masked network and prune to density_k = rho^(k/n), rho = 1 - sparsity
(n = 100 by default for synflow, 1 for any other criterion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

from pruneexp.config import ScheduleConfig
from pruneexp.errors import PruneexpError
from pruneexp.pruning.criteria import CRITERIA
from pruneexp.pruning.masks import MaskSet
from pruneexp.pruning.sparse_init import check_sparse_init, scale_for_density
from pruneexp.schedules import SCHEDULES
from pruneexp.schedules.context import Level, RunContext

@dataclass
class AtInitConfig(ScheduleConfig):
    iterations: Optional[int] = None  # pruning rounds; None: the criterion's default (synflow 100, else 1)
    sparse_init: str = "dense"  # dense (the model's init, masked) | layer_scaled (kept weights / sqrt(layer density))


def iterations(cfg: Any) -> int:
    """`schedule.iterations`, or the criterion's own default (`at_init_iterations` in its
    registration: 100 for synflow, Tanaka et al. 2020, Section 6; 1 otherwise)."""
    if cfg.schedule.iterations is not None:
        return int(cfg.schedule.iterations)
    return int(CRITERIA.meta(cfg.criterion.name)["at_init_iterations"])


def density_schedule(sparsity: float, n: int) -> list[float]:
    """The sparsity after each of the n pruning rounds: 1 - rho^(k/n), k = 1..n, rho = 1 - sparsity."""
    rho = 1.0 - sparsity
    return [1.0 - rho ** (k / n) for k in range(1, n + 1)]


def check(cfg: Any) -> None:
    if cfg.schedule.iterations is not None and cfg.schedule.iterations < 1:
        raise PruneexpError(f"schedule.iterations={cfg.schedule.iterations} must be at least 1 (or null for the criterion's default).")
    check_sparse_init(cfg.schedule.sparse_init)


def prune_at_init(ctx: RunContext, model: Any, masks: MaskSet) -> MaskSet:
    """Score and prune the untrained `model` to `sparsity` in `iterations` rounds, re-scoring the
    masked network each round."""
    for target in density_schedule(ctx.cfg.sparsity, iterations(ctx.cfg)):
        masks = ctx.prune(model, masks, target)
    return masks


@SCHEDULES.register("at_init", check=check, config=AtInitConfig)
def at_init(ctx: RunContext) -> Iterator[Level]:
    """Levels: 0 the dense network at initialisation (untrained), 1 pruned at initialisation,
    2 the sparse network trained for `train.duration` from that initialisation (its kept weights
    rescaled to the layer's density first under `schedule.sparse_init=layer_scaled`)."""
    model = ctx.build_model()
    dense = ctx.dense_masks(model)
    init = ctx.level(0, "init", model, dense, lambda: (dense, None))
    yield init
    pruned = ctx.level(1, "pruned", model, dense,
                       lambda: (scale_for_density(model, prune_at_init(ctx, model, dense), ctx.cfg.schedule.sparse_init), None))
    yield pruned
    yield ctx.level(2, "trained", model, pruned.masks,
                    lambda: (pruned.masks, ctx.train(model, pruned.masks, ctx.train_cfg(), "train", 2)))
