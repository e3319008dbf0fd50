"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune").

The recipe: train from scratch; at t = t0, t0 + dt, ..., t0 + n*dt raise the sparsity along

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3

(fast at first, while there are many redundant weights, slower near the target) by pruning the
lowest-scored weights with the configured criterion (magnitude in the paper, any criterion here);
after t0 + n*dt the masks are fixed and training runs to the end of its budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from pruneexp.config import ScheduleConfig
from pruneexp.errors import PruneexpError
from pruneexp.pruning.masks import MaskSet
from pruneexp.schedules import SCHEDULES
from pruneexp.schedules.context import Level, RunContext
from pruneexp.train import Sparsifier, TrainResult, steps_per_epoch
from pruneexp.train.durations import check as check_duration
from pruneexp.train.durations import to_steps


@dataclass
class GmpConfig(ScheduleConfig):
    start: str = "0it"  # t0: the first update
    end: str = "10ep"  # t0 + n dt: the last update, at the target sparsity
    frequency: str = "1ep"  # dt
    initial_sparsity: float = 0.0  # s_i


def cubic_sparsity(t: int, s_i: float, s_f: float, t0: int, n: int, dt: int) -> float:
    """Zhu & Gupta's s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3, held at s_i before t0 and at
    s_f after t0 + n dt."""
    progress = min(1.0, max(0.0, (t - t0) / (n * dt)))
    return s_f + (s_i - s_f) * (1.0 - progress) ** 3


def update_steps(ctx: RunContext) -> tuple[int, int, int]:
    """(t0, n, dt) of the schedule in steps: `start`, (end - start) / frequency updates, `frequency`."""
    s, t = ctx.cfg.schedule, ctx.cfg.train
    spe = steps_per_epoch(ctx.data, t.batch_size)
    t0, end, dt = (to_steps(d, spe) for d in (s.start, s.end, s.frequency))
    total = to_steps(t.duration, spe)
    if dt < 1 or end <= t0 or end > total:
        raise PruneexpError(f"gmp needs schedule.start < schedule.end <= train.duration and schedule.frequency >= 1 step "
                            f"(got start={t0}, end={end}, duration={total}, frequency={dt} steps).")
    return t0, max(1, round((end - t0) / dt)), dt


def check(cfg: Any) -> None:
    s = cfg.schedule
    for d in (s.start, s.end, s.frequency):
        check_duration(d)
    if not 0.0 <= s.initial_sparsity <= cfg.sparsity:
        raise PruneexpError(f"schedule.initial_sparsity={s.initial_sparsity} must be in [0, sparsity={cfg.sparsity}].")


NO_METRICS = dict.fromkeys(("val_loss", "val_acc", "test_loss", "test_acc"), math.nan)


class CubicPruning(Sparsifier):
    """Gradual pruning as a training hook: after step t = t0 + k dt (k = 0..n) the masks are
    re-selected at sparsity s_t by the prune step, in place, and the update is recorded (its masks,
    and its metrics when t is an evaluation step of the loop; other updates are not evaluated, so
    that frequent updates cost a prune step each and nothing more)."""

    def __init__(self, ctx: RunContext, t0: int, n: int, dt: int, eval_every: int):
        self.ctx, self.t0, self.n, self.dt, self.eval_every = ctx, t0, n, dt, eval_every
        self.updates: list[tuple[int, int, MaskSet, dict[str, Any]]] = []  # (k, t, masks, metrics)

    def update(self, model: nn.Module, t: int, masks: MaskSet, evaluate: bool) -> None:
        c = self.ctx.cfg
        new = self.ctx.prune(model, masks, cubic_sparsity(t, c.schedule.initial_sparsity, c.sparsity, self.t0, self.n, self.dt))
        masks.update_(new)
        metrics = self.ctx.evaluate(model) if evaluate else dict(NO_METRICS)
        self.updates.append(((t - self.t0) // self.dt, t, masks.clone(), {**metrics, "step": t}))

    def state_dict(self) -> dict[str, Any]:
        return {"updates": [dict(k=k, t=t, masks=m.state_dict(), metrics=metrics) for k, t, m, metrics in self.updates]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = [(u["k"], u["t"], MaskSet.from_state_dict(u["masks"]).to(self.ctx.device), u["metrics"])
                        for u in state["updates"]]

    def after_step(self, model: nn.Module, step: int, masks: MaskSet, optimizer: torch.optim.Optimizer) -> None:
        t = step + 1
        if self.t0 <= t <= self.t0 + self.n * self.dt and (t - self.t0) % self.dt == 0:
            self.update(model, t, masks, evaluate=t % self.eval_every == 0)


@SCHEDULES.register("gmp", check=check, config=GmpConfig, levelwise=True)
def gmp(ctx: RunContext) -> Iterator[Level]:
    """Gradual magnitude pruning (Zhu & Gupta 2017): one training run (one `train()` call, one
    optimizer) whose sparsity follows the cubic schedule from `schedule.initial_sparsity` at `start`
    to `sparsity` at `end`, updated every `frequency` through the training loop's sparsifier hook.
    Levels: one per update (k = 0..n, named by its step; masks and sparsity, metrics where the
    update fell on an evaluation step), then the trained network (level n + 1, with weights and its
    live architecture, `live_units`)."""
    t0, n, dt = update_steps(ctx)
    train_cfg = ctx.train_cfg()
    spe = steps_per_epoch(ctx.data, train_cfg.batch_size)
    model = ctx.build_model()
    masks = ctx.dense_masks(model)
    names = [f"step_{t0 + k * dt}" for k in range(n + 1)]
    saved = [ctx.load_level(k) for k in range(n + 1)]
    if all(s is not None for s in saved) and ctx.finished(n + 1):  # a finished run: everything from disk
        for k, s in enumerate(saved):
            yield Level(k, names[k], model, MaskSet.from_state_dict(s["masks"]).to(ctx.device), s["metrics"], restored=True,
                        weights=False, flush=False)
        yield ctx.level(n + 1, "trained", model, masks, lambda: (masks, None))
        return

    hook = CubicPruning(ctx, t0, n, dt, eval_every=max(1, to_steps(train_cfg.eval_every, spe)))

    def run() -> tuple[MaskSet, TrainResult]:
        if t0 == 0:  # the first update comes before the first step
            hook.update(model, 0, masks, evaluate=True)
        return masks, ctx.train(model, masks, train_cfg, "gmp", n + 1, sparsifier=hook)

    trained = ctx.with_live_units(ctx.level(n + 1, "trained", model, masks, run))  # the architecture `shrink` leaves
    for k, t, update_masks, metrics in hook.updates:
        yield Level(k, names[k], model, update_masks, metrics, weights=False, flush=False)
    yield trained
