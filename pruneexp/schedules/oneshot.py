"""One-shot pruning: train dense, prune once to the target, fine-tune."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from pruneexp.config import FinetuneConfig, ScheduleConfig
from pruneexp.schedules import SCHEDULES
from pruneexp.schedules.context import Level, RunContext
from pruneexp.train import steps_per_epoch
from pruneexp.train.durations import to_steps


@dataclass
class OneshotConfig(ScheduleConfig):
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # train overrides of the fine-tuning phase


@SCHEDULES.register("oneshot", config=OneshotConfig)
def oneshot(ctx: RunContext) -> Iterator[Level]:
    """Train the dense network, remove `sparsity` of its prunable weights in one step with the
    configured criterion and selector, then fine-tune with `schedule.finetune` (Han et al. 2015 with
    a single pruning step; the one-shot baseline of Frankle & Carbin 2019 and of ShrinkBench,
    Blalock et al. 2020). Levels: 0 dense, 1 pruned (before fine-tuning), 2 fine-tuned (only with a
    non-zero `schedule.finetune.duration`: with `0it` the pruned network is the result, as in
    one-shot post-training pruning)."""
    cfg = ctx.cfg
    model = ctx.build_model()
    dense_masks = ctx.dense_masks(model)
    dense = ctx.level(0, "dense", model, dense_masks,
                      lambda: (dense_masks, ctx.train_dense(model, dense_masks)))
    yield dense
    pruned = ctx.level(1, "pruned", model, dense.masks, lambda: (ctx.prune(model, dense.masks, cfg.sparsity), None))
    yield pruned
    finetune = ctx.train_cfg(cfg.schedule.finetune)
    if to_steps(finetune.duration, steps_per_epoch(ctx.data, finetune.batch_size)) == 0:
        return
    yield ctx.level(2, "finetuned", model, pruned.masks,
                    lambda: (pruned.masks, ctx.train(model, pruned.masks, finetune, "finetune", 2)))
