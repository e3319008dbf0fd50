"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune").

The recipe: train from scratch; at t = t0, t0 + dt, ..., t0 + n*dt raise the sparsity along

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3

(fast at first, while there are many redundant weights, slower near the target) by pruning the
lowest-scored weights with the configured criterion (magnitude in the paper, any criterion here);
after t0 + n*dt the masks are fixed and training runs to the end of its budget.
"""

from __future__ import annotations

from typing import Any, Iterator

from pruneexp.errors import PruneexpError
from pruneexp.pruning.masks import MaskSet
from pruneexp.schedules import SCHEDULES
from pruneexp.schedules.context import Level, RunContext
from pruneexp.train import TrainResult, TrainState, steps_per_epoch
from pruneexp.train.durations import check as check_duration
from pruneexp.train.durations import to_steps


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


@SCHEDULES.register("gmp", check=check)
def gmp(ctx: RunContext) -> Iterator[Level]:
    """Gradual magnitude pruning (Zhu & Gupta 2017): one training run whose sparsity follows the
    cubic schedule from `schedule.initial_sparsity` at `start` to `sparsity` at `end`, updated every
    `frequency`; a level at each update (k = 0..n, named by its step), then the trained network."""
    cfg = ctx.cfg
    t0, n, dt = update_steps(ctx)
    train_cfg = ctx.train_cfg()
    model = ctx.build_model()
    masks = ctx.dense_masks(model)
    state: TrainState | None = None
    states: dict[int, TrainState] = {}
    for k in range(n + 1):
        t = t0 + k * dt

        def work(k: int = k, t: int = t, masks: MaskSet = masks, state: TrainState | None = state) -> tuple[MaskSet, None]:
            result = ctx.train(model, masks, train_cfg, "gmp", k, state=state, stop=t, snapshot_at={t})
            new = ctx.prune(model, masks, cubic_sparsity(t, cfg.schedule.initial_sparsity, cfg.sparsity, t0, n, dt))
            states[k] = result.snapshots[t]
            ctx.run_files.save(f"state_{k:03d}.pt", states[k])  # to resume mid-training
            return new, None

        level = ctx.level(k, f"step_{t}", model, masks, work)
        level.metrics.setdefault("step", t)
        yield level
        masks, state = level.masks, states.get(k) or ctx.run_files.load(f"state_{k:03d}.pt")

    def finish() -> tuple[MaskSet, TrainResult]:
        return masks, ctx.train(model, masks, train_cfg, "gmp", n + 1, state=state)

    yield ctx.level(n + 1, "trained", model, masks, finish)
