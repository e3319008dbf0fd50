"""One-shot pruning with rewinding (Frankle & Carbin 2019, "The Lottery Ticket Hypothesis",
one-shot variant; Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis", for rewinding to iteration k > 0):

    1. train the dense network, keeping a snapshot at the rewind point (weights, optimizer, RNG);
    2. prune `sparsity` of the prunable weights in one step with the criterion and selector;
    3. rewind the kept weights, optimizer state and data order to the snapshot and train the rest
       of the budget with the masks fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from pruneexp.config import ScheduleConfig
from pruneexp.schedules import SCHEDULES
from pruneexp.schedules.context import Level, RunContext
from pruneexp.schedules.imp import rewind_step


@dataclass
class OneshotRewindConfig(ScheduleConfig):
    rewind: str = "0it"  # the rewind point: "0it" (the ticket's initialisation) or e.g. "500it", "1ep"


@SCHEDULES.register("oneshot_rewind", config=OneshotRewindConfig)
def oneshot_rewind(ctx: RunContext) -> Iterator[Level]:
    """Levels: 0 dense (trained), 1 pruned (trained weights, new masks), 2 rewound and retrained."""
    cfg, r = ctx.cfg, rewind_step(ctx)
    model = ctx.build_model()
    dense_masks = ctx.dense_masks(model)
    snapshots = {}

    def train_dense():
        result = ctx.train_dense(model, dense_masks, snapshot_at={r})
        snapshots.update(result.snapshots)
        return dense_masks, result

    dense = ctx.level(0, "dense", model, dense_masks, train_dense)
    yield dense
    pruned = ctx.level(1, "pruned", model, dense.masks, lambda: (ctx.prune(model, dense.masks, cfg.sparsity), None))
    yield pruned
    if r not in snapshots:  # resumed after level 0: the dense cache holds the snapshot
        snapshots.update(ctx.train_dense(ctx.build_model(), dense_masks, snapshot_at={r}).snapshots)
    yield ctx.level(2, "rewound", model, pruned.masks,
                    lambda: (pruned.masks, ctx.train(model, pruned.masks, ctx.train_cfg(), "rewind", 2, state=snapshots[r])))
