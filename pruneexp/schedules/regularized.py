"""Sparsity from the loss: train with the run's regularizer (`regularizer=l1|l2|group_lasso|
elastic_net|sparse_group_lasso`), threshold what it drove to zero into the run's MaskSet, prune
further to `regularizer.target_sparsity` if asked (target mode), fine-tune if
`schedule.finetune.duration` is not zero.

The penalty is added to the loss (`regularizer.update=subgradient`, the reference codes of
Scardapane et al. 2017 and Wen et al. 2016: never exact zeros, hence the threshold) or applied as a
proximal step after each optimizer step (`update=proximal`: exact zeros). A method that
reparameterises layers (`regularizer=sparse_vd`) wraps the prunable layers before training and
folds them back to plain layers plus the MaskSet after it, so levels are measured like any other. Groups are the output
units at `prune.granularity=channel` (the classifier's units excepted), single weights at `weight`.
With `regularizer=none` it is the unregularized control (the same training, nothing thresholded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from pruneexp.config import FinetuneConfig, ScheduleConfig
from pruneexp.errors import PruneexpError
from pruneexp.pruning.channels import unit_alive, with_channel_footprint
from pruneexp.pruning.masks import MaskSet
from pruneexp.regularizers import REGULARIZERS
from pruneexp.regularizers.base import PenaltySparsifier, make_groups
from pruneexp.schedules import SCHEDULES
from pruneexp.schedules.context import Level, RunContext
from pruneexp.train import steps_per_epoch
from pruneexp.train.durations import check as check_duration
from pruneexp.train.durations import to_steps


@dataclass
class RegularizedConfig(ScheduleConfig):
    # the fine-tuning phase after thresholding (duration 0it: none)
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(duration="0it"))


def check(cfg: Any) -> None:
    if cfg.regularizer.name == "none":
        return
    if cfg.prune.granularity == "channel" and cfg.prune.scope == "row":
        raise PruneexpError("schedule=regularized at prune.granularity=channel needs a scope other than row.")


def units_alive(model: Any, masks: MaskSet, frozen: tuple[str, ...]) -> int:
    """Output units, over every prunable layer but the frozen classifier, that keep a weight."""
    return sum(int(unit_alive(masks[w]).sum()) for w in masks.weights if w not in frozen)


@SCHEDULES.register("regularized", check=check, config=RegularizedConfig)
def regularized(ctx: RunContext) -> Iterator[Level]:
    """Levels: 0 `regularized` (trained with the penalty, then thresholded: the sparsity the penalty
    alone reached), 1 `target` (only with `regularizer.target_sparsity`: the selector prunes on to
    it), then `finetuned` (only with a non-zero `schedule.finetune.duration`). Each level's metrics
    carry `units_alive` (output units of the prunable layers but the classifier that keep a weight)."""
    cfg = ctx.cfg
    r = cfg.regularizer
    model = ctx.build_model()
    masks = ctx.dense_masks(model)
    penalty = REGULARIZERS.get(r.name)(r)
    frozen = ctx.channel_frozen(model) if cfg.prune.granularity == "channel" else ()
    reparameterises = REGULARIZERS.meta(r.name).get("reparameterises", False)
    if reparameterises:  # wraps the prunable layers now, folds them back to plain layers + masks after training
        sparsifier = penalty
        if not ctx.finished(0):  # (a resumed run loads its folded level 0 into the plain model instead)
            spe = steps_per_epoch(ctx.data, cfg.train.batch_size)
            try:
                sparsifier.wrap(model, ctx.prunable(model), len(ctx.data.train_y), spe, frozen)
            except TypeError as err:
                raise PruneexpError(f"regularizer={r.name}: {err}; use a model made of the layers it wraps (lenet_300_100, mlp; sparse_vd: lenet5, lenet5_caffe too).") from err
    else:
        sparsifier = PenaltySparsifier(penalty, make_groups(model, ctx.prunable(model), penalty.grouped, frozen), r["update"])

    def with_units(level: Level) -> Level:
        level.metrics.setdefault("units_alive", units_alive(model, level.masks, frozen))
        return level

    def train_and_threshold() -> tuple[MaskSet, Any]:
        result = ctx.train(model, masks, ctx.train_cfg(), "regularized", 0, sparsifier=sparsifier)
        if r.name == "none":
            return masks, result
        if reparameterises:
            new = sparsifier.fold(model, masks)
            if cfg.prune.granularity == "channel":
                new = with_channel_footprint(model, new)
            new.apply_(model)
            return new, None  # evaluated folded (it equals the trained model in deterministic mode)
        new = sparsifier.threshold_masks(masks, float(r.threshold))
        if cfg.prune.granularity == "channel":
            new = with_channel_footprint(model, new)
        new.apply_(model)
        return new, None  # evaluated after thresholding

    level = ctx.level(0, "regularized", model, masks, train_and_threshold)
    yield with_units(level)
    current, k = level.masks, 1
    if r.target_sparsity is not None:
        reached = level.masks.report(model).sparsity
        if reached > r.target_sparsity and not ctx.quiet:
            print(f"note: the penalty alone reached sparsity {reached:.4f}, above regularizer.target_sparsity="
                  f"{r.target_sparsity}; pruned weights stay pruned, so the target level keeps {reached:.4f}.")
        level = ctx.level(k, "target", model, current, lambda: (ctx.prune(model, current, float(r.target_sparsity)), None))
        yield with_units(level)
        current, k = level.masks, k + 1
    finetune = ctx.train_cfg(cfg.schedule.finetune)
    if to_steps(finetune.duration, steps_per_epoch(ctx.data, finetune.batch_size)) > 0:
        yield with_units(ctx.level(k, "finetuned", model, current,
                                   lambda: (current, ctx.train(model, current, finetune, "finetune", k))))


def check_regularizer(cfg: Any) -> None:
    """The regularizer is known, its settings are sane, it fits the granularity and the schedule.
    Called by `validate` before any data is loaded."""
    r = cfg.regularizer
    meta = REGULARIZERS.meta(r.name)
    if r.name == "none":
        return
    if cfg.schedule.name != "regularized":
        raise PruneexpError(f"regularizer={r.name} acts during training in schedule=regularized (train with the penalty, "
                            f"threshold, fine-tune); schedule={cfg.schedule.name} does not train with a regularizer. "
                            f"Use schedule=regularized, or regularizer=none.")
    can = meta["granularities"]
    if cfg.prune.granularity not in can:
        what = ("groups are output units: use prune.granularity=channel" if "channel" in can else
                "it penalises single weights: use prune.granularity=weight (group_lasso or sparse_group_lasso for units)")
        raise PruneexpError(f"regularizer={r.name} cannot be used with prune.granularity={cfg.prune.granularity}: {what}.")
    if r["update"] not in ("subgradient", "proximal"):
        raise PruneexpError(f"Unknown regularizer.update '{r['update']}'; known: subgradient, proximal.")
    if meta.get("reparameterises") and r["update"] != "subgradient":
        raise PruneexpError(f"regularizer={r.name} trains its KL term in the loss: regularizer.update=subgradient "
                            f"(a proximal step does not apply to it).")
    if "granularity" in r:  # l0's gates: on weights or input features (prune.granularity=weight), on units (channel)
        if r.granularity not in ("weight", "channel", "input"):
            raise PruneexpError(f"Unknown regularizer.granularity '{r.granularity}'; known: weight, channel, input.")
        need = "channel" if r.granularity == "channel" else "weight"
        if cfg.prune.granularity != need:
            raise PruneexpError(f"regularizer={r.name} with gates on {r.granularity} needs prune.granularity={need} "
                                f"(got {cfg.prune.granularity}).")
    if "init_drop" in r and not 0.0 < r.init_drop < 1.0:
        raise PruneexpError(f"regularizer.init_drop={r.init_drop} is outside (0, 1).")
    if r.strength < 0 or r.threshold < 0:
        raise PruneexpError(f"regularizer.strength ({r.strength}) and regularizer.threshold ({r.threshold}) must be >= 0.")
    if r.target_sparsity is not None and not 0.0 <= r.target_sparsity < 1.0:
        raise PruneexpError(f"regularizer.target_sparsity={r.target_sparsity} is outside [0, 1).")
    for key in ("kl_warmup", "kl_warmup_start"):
        if key in r:
            check_duration(r[key])
    if "train_clip_variance" in r and r.train_clip_variance not in ("all", "conv"):
        raise PruneexpError(f"Unknown regularizer.train_clip_variance '{r.train_clip_variance}'; known: all (clipped weights "
                            f"leave the variance too), conv (only in convolutions: the authors' code).")
    if "l1_ratio" in r and not 0.0 <= r.l1_ratio <= 1.0:
        raise PruneexpError(f"regularizer.l1_ratio={r.l1_ratio} is outside [0, 1].")
