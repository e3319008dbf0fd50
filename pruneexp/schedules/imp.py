"""Iterative pruning with every retraining mode and the lottery-ticket controls.

The recipe (Han et al. 2015; Frankle & Carbin 2019, "The Lottery Ticket Hypothesis"):
    1. initialise the network and train it (level 0, dense), keeping a snapshot at the rewind point;
    2. prune `rate` of the remaining weights with the criterion and selector;
    3. retrain the pruned network by the `retrain` mode:
       - rewind: restore weights, optimizer state, LR position and data order from the snapshot
         (iteration 0: the lottery ticket; iteration/epoch k: late rewinding, Frankle et al. 2020)
         and train the rest of the budget;
       - lr_rewind: keep the final weights, replay the LR schedule from the rewind point (Renda et
         al. 2020, "Comparing Rewinding and Fine-tuning in Neural Network Pruning");
       - finetune: keep the final weights, train with `schedule.finetune` (Renda et al.'s
         fine-tuning baseline: the final, small LR for a given budget);
       - reinit (control): the ticket's mask, fresh weights from the same initialiser drawn with
         another seed, trained from the start (Frankle & Carbin 2019, Section 2);
       - random_mask (control): a random mask with the ticket's per-layer sparsity, rewound like
         the ticket;
    4. repeat 2-3 for `levels` levels or until `target` sparsity.
The controls use the masks of the rewinding trajectory with the same config (the ticket). A
`rewind` run shares its masks through `ctx.ticket_files`; a control run reads them there, or
computes (and shares) the ones it lacks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator, List, Optional

import torch
from torch import nn

from pruneexp.config import FinetuneConfig, ScheduleConfig
from pruneexp.errors import PruneexpError
from pruneexp.pruning.groups import Granularity
from pruneexp.pruning import biases as joint
from pruneexp.pruning.masks import MaskSet, bias_name
from pruneexp.pruning.select import explicit_layer_targets, imp_layer_sparsity, imp_sparsity, layer_targets, select
from pruneexp.schedules import SCHEDULES
from pruneexp.schedules.context import Level, RunContext
from pruneexp.train import TrainResult, TrainState, steps_per_epoch, train
from pruneexp.train.durations import check as check_duration
from pruneexp.train.durations import to_steps
from pruneexp.train.optim import make_optimizer

TRAJECTORIES = ("rewind", "lr_rewind", "finetune")  # prune the network they trained themselves
CONTROLS = ("reinit", "random_mask")  # retrain the ticket's masks differently
RETRAIN = TRAJECTORIES + CONTROLS
ROUNDS = ("geometric", "linear")


@dataclass
class ImpConfig(ScheduleConfig):
    levels: int = 15  # pruning levels after the dense one
    rate: float = 0.2  # fraction of the remaining groups pruned per level
    target: Optional[float] = None  # stop early once this sparsity is reached
    # what is trained after each pruning: rewind | lr_rewind | finetune (own trajectory) or the
    # controls reinit | random_mask (on the masks of the rewind trajectory)
    retrain: str = "rewind"
    rewind: str = "0it"  # the rewind point: "0it" (lottery ticket), "500it", "1ep" (late rewinding)
    # retrain=reinit or random_mask: compute only these levels in this invocation (a reinit level
    # depends only on the ticket's mask at that level, as OpenLTH's per-level branches; a random
    # mask on the masks drawn before it, which are drawn again without training); the run stays
    # "partial" and a later invocation without it computes the rest. Does not change results, so not hashed.
    only_levels: Optional[List[int]] = None
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(lr=0.001, lr_schedule="constant"))
    # geometric: each level prunes `rate` of the remaining groups, (1 - rate)^k kept after k levels;
    # linear: level k reaches sparsity k * rate of the original (Greydanus's MNIST-1D notebook:
    # np.linspace(0, 1, 100), i.e. rate = 1/99)
    rounds: str = "geometric"
    # Take level k's mask from the weights at this step of level k-1's training ("1001it") instead of
    # its last step (null). The notebook prunes from its checkpoint at step 1000 of 1501.
    mask_step: Optional[str] = None


def left_out(cfg: Any, done: set[int]) -> list[int]:
    """The levels that schedule.only_levels left for a later invocation (none without it)."""
    if cfg.schedule.get("only_levels") is None:
        return []
    return [k for k in range(cfg.schedule.levels + 1) if k not in done]


def ticket_key(resolved: dict[str, Any]) -> dict[str, Any]:
    """What names this config's lottery-ticket trajectory (whose masks its controls share): the
    config with retrain=rewind, minus what does not change the masks (experiment name, level
    count and target, fine-tuning)."""
    key = dict(resolved)
    key.pop("experiment", None)
    key["schedule"] = {k: v for k, v in key["schedule"].items() if k not in ("levels", "target", "finetune")}
    key["schedule"]["retrain"] = "rewind"
    return key


def check(cfg: Any) -> None:
    s = cfg.schedule
    if s.retrain not in RETRAIN:
        raise PruneexpError(f"Unknown schedule.retrain '{s.retrain}'; known: {', '.join(RETRAIN)}.")
    if not 0.0 < s.rate < 1.0:
        raise PruneexpError(f"schedule.rate={s.rate} must be in (0, 1): the fraction of remaining weights pruned per level.")
    if s.levels < 1:
        raise PruneexpError(f"schedule.levels={s.levels} must be at least 1.")
    if s.target is not None and not 0.0 < s.target < 1.0:
        raise PruneexpError(f"schedule.target={s.target} must be in (0, 1) (or null: run all schedule.levels).")
    check_duration(s.rewind)
    rounds = s.get("rounds", "geometric")
    if rounds not in ROUNDS:
        raise PruneexpError(f"Unknown schedule.rounds '{rounds}'; known: {', '.join(ROUNDS)}.")
    if rounds == "linear" and s.levels * s.rate >= 1.0:
        raise PruneexpError(f"schedule.rounds=linear reaches sparsity levels * rate = {s.levels} * {s.rate} = {s.levels * s.rate:g} "
                            f"at the last level; it must stay below 1 (fewer levels or a smaller rate).")
    if s.get("mask_step") is not None:
        check_duration(s.mask_step)
        if s.retrain not in ("rewind", "random_mask", "reinit"):
            raise PruneexpError(f"schedule.mask_step applies to retrain=rewind and its controls, not retrain={s.retrain}.")
    only = s.get("only_levels")
    if only is not None:
        if s.retrain not in CONTROLS:
            raise PruneexpError(f"schedule.only_levels applies to the controls (retrain=reinit, random_mask) only: level k "
                                f"of retrain={s.retrain} is pruned from the trained level k-1, so its levels run in order.")
        if s.target is not None:
            raise PruneexpError("schedule.only_levels needs schedule.target=null: the levels are counted, not searched for.")
        outside = [k for k in only if not 1 <= k <= s.levels]
        if outside or not only:
            raise PruneexpError(f"schedule.only_levels={list(only)} must name levels in 1..{s.levels} (schedule.levels); "
                                f"level 0 is the shared dense network and always present.")


def rewind_step(ctx: RunContext) -> int:
    """The rewind point in steps ("0it", "500it", "1ep"), which must lie inside the training."""
    t = ctx.cfg.train
    spe = steps_per_epoch(ctx.data, t.batch_size)
    step, total = to_steps(ctx.cfg.schedule.rewind, spe), to_steps(t.duration, spe)
    if step >= total:
        raise PruneexpError(f"schedule.rewind={ctx.cfg.schedule.rewind} ({step} steps) is not inside train.duration={t.duration} ({total} steps).")
    return step


def mask_step(ctx: RunContext) -> int | None:
    """schedule.mask_step in steps (None: masks come from the last step), inside the training."""
    ms = ctx.cfg.schedule.get("mask_step")
    if ms is None:
        return None
    t = ctx.cfg.train
    spe = steps_per_epoch(ctx.data, t.batch_size)
    step, total = to_steps(ms, spe), to_steps(t.duration, spe)
    if not 0 < step <= total:
        raise PruneexpError(f"schedule.mask_step={ms} ({step} steps) is not inside train.duration={t.duration} ({total} steps).")
    return step


def prune_level(ctx: RunContext, model: nn.Module, masks: MaskSet, level: int) -> MaskSet:
    """Prune to `level`'s sparsity (weights, or units/blocks at coarser granularity, as the selector
    counts them): per layer (with `prune.layer_rates`, e.g. the output layer at half rate) under
    layerwise scope, over all layers under global scope. `schedule.rounds=geometric` removes
    `schedule.rate` of the remaining groups; `linear` goes to `level * rate` of the original. With
    `prune.biases` the counts are over each layer's weights and bias together. With
    `prune.layer_sparsity` (explicit final per-layer sparsities, Han et al. 2015) level k of n
    prunes each layer to density (1 - s_l)^(k/n) instead, landing on s_l at the last level."""
    rate, p, s = ctx.cfg.schedule.rate, ctx.cfg.prune, ctx.cfg.schedule
    gran = Granularity.from_cfg(p)
    if p.get("layer_sparsity"):
        return ctx.prune(model, masks, 0.0, layer_sparsity=explicit_layer_targets(
            list(masks.weights), ctx.cfg.sparsity, dict(p.layer_sparsity), fraction=level / s.levels))
    linear = s.get("rounds", "geometric") == "linear"
    counted = joint.joint_masks(masks, joint.layer_biases(model, masks.weights)) if p.get("biases", False) else masks
    if p.scope == "layerwise":
        if linear:
            targets = {n: min(level * r, 1.0) for n, r in layer_targets(list(masks.weights), rate, dict(p.layer_rates)).items()}
        else:
            targets = imp_layer_sparsity(counted, rate, dict(p.layer_rates), gran)
        return ctx.prune(model, masks, 0.0, layer_sparsity=targets)
    frozen = ctx.channel_frozen(model) if gran.kind == "channel" else ()
    return ctx.prune(model, masks, level * rate if linear else imp_sparsity(counted, rate, gran, exclude=frozen))


def random_masks(inside: MaskSet, like: MaskSet, seed: int) -> MaskSet:
    """Random masks within `inside`, keeping as many weights in each layer as `like` does (the
    random-pruning control of Frankle & Carbin 2019). Thresholded by the selector on uniform scores.
    Where `like` also masks biases (prune.biases), each layer's weights and bias are drawn together,
    keeping as many of them in all as `like` does."""
    biases = {w: bias_name(w) for w in like.weights if bias_name(w) in like.masks and bias_name(w) not in like.weights}
    if biases:
        return joint.split(random_masks(joint.joint_masks(inside, biases), joint.joint_masks(like, biases), seed), inside, biases)
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(inside[n].shape, generator=g) for n in inside.weights}
    targets = {n: 1.0 - int(like[n].sum()) / like[n].numel() for n in inside.weights}
    return select(scores, 0.0, inside, scope="layerwise", layer_sparsity=targets)


def level_seed(seed: int, level: int) -> int:
    """The seed of a control's randomness at a level: another seed than the run's, one per level."""
    return seed * 1_000_003 + 7919 * level + 1


class TicketMasks:
    """The masks of the rewinding trajectory of this config at each level: read from
    `ctx.ticket_files`, else computed by training the ticket of the level before (and shared)."""

    def __init__(self, ctx: RunContext, dense: MaskSet, dense_weights: dict[str, Any], snapshot: TrainState):
        self.ctx, self.dense, self.dense_weights, self.snapshot = ctx, dense, dense_weights, snapshot

    @staticmethod
    def name(level: int) -> str:
        return f"masks_{level:03d}.pt"

    def __call__(self, level: int) -> MaskSet:
        if level == 0:
            return self.dense
        saved = self.ctx.ticket_files.load(self.name(level))
        if saved is not None:
            return MaskSet.from_state_dict(saved).to(self.ctx.device)
        before = self(level - 1)
        model = self.ctx.build_model()
        ms = mask_step(self.ctx)
        if level == 1:
            model.load_state_dict(self.dense_weights)
        else:
            result = train(model, self.ctx.data, before, self.ctx.train_cfg(), seed=self.ctx.cfg.seed, task=self.ctx.task,
                           state=self.snapshot, quiet=True, snapshot_at=() if ms is None else (ms,),
                           channels_last=self.ctx.channels_last)
            if ms is not None:
                model.load_state_dict(result.snapshots[ms].model)
        masks = prune_level(self.ctx, model, before, level)
        self.ctx.ticket_files.save(self.name(level), masks.state_dict())
        return masks


def retrain(ctx: RunContext, model: nn.Module, masks: MaskSet, snapshot: TrainState, level: int,
            snapshot_at: tuple[int, ...] = ()) -> TrainResult:
    """Train the pruned `model` (holding the previous level's trained weights) by `schedule.retrain`
    (capturing the weights at `snapshot_at`, for schedule.mask_step)."""
    mode, cfg = ctx.cfg.schedule.retrain, ctx.train_cfg()
    if mode in ("rewind", "random_mask"):
        return ctx.train(model, masks, cfg, mode, level, state=snapshot, snapshot_at=snapshot_at)
    if mode == "lr_rewind":
        fresh = make_optimizer(model.parameters(), cfg).state_dict()
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return ctx.train(model, masks, cfg, mode, level, state=TrainState(snapshot.step, weights, fresh, snapshot.rng, snapshot.cuda_rng))
    if mode == "finetune":
        return ctx.train(model, masks, ctx.train_cfg(ctx.cfg.schedule.finetune), mode, level)
    fresh = ctx.build_model(seed=level_seed(ctx.cfg.seed, level))  # reinit
    model.load_state_dict(fresh.state_dict())
    masks.apply_(model)
    return ctx.train(model, masks, cfg, mode, level, snapshot_at=snapshot_at)


def keep_mask_source(ctx: RunContext, level: int, result: TrainResult, step: int | None) -> None:
    """With schedule.mask_step: keep `level`'s weights at that step beside the run, for the next
    level's mask (two files by parity: the one a resumed run needs is never the one being written)."""
    if step is not None:
        ctx.run_files.save(f"mask_source_{level % 2}.pt", dict(level=level, model=result.snapshots[step].model))


def mask_source(ctx: RunContext, model: nn.Module, level: int, step: int | None) -> nn.Module:
    """The network level `level + 1` is pruned from: `model` (its last step), or with
    schedule.mask_step a copy holding its weights at that step."""
    if step is None:
        return model
    saved = ctx.run_files.load(f"mask_source_{level % 2}.pt")
    if saved is None or int(saved["level"]) != level:
        raise PruneexpError(f"The weights of level {level} at schedule.mask_step are not beside this run (a run interrupted "
                            f"while saving them); delete the run's directory and run it again.")
    source = copy.deepcopy(model)  # not build_model: that reseeds the global generator
    source.load_state_dict(saved["model"])
    return source


@SCHEDULES.register("imp", check=check, config=ImpConfig, levelwise=True, left_out=left_out, ticket_key=ticket_key)
def imp(ctx: RunContext) -> Iterator[Level]:
    """Iterative pruning (Han et al. 2015; Frankle & Carbin 2019; Frankle et al. 2020; Renda et al.
    2020): train, prune `rate` of the remaining weights, retrain by `schedule.retrain`, repeat.
    Level 0 is the trained dense network; level k the network retrained at the k-th sparsity."""
    s = ctx.cfg.schedule
    r = rewind_step(ctx)
    model = ctx.build_model()
    dense_masks = ctx.dense_masks(model)

    ms = mask_step(ctx)

    def train_dense() -> tuple[MaskSet, TrainResult]:
        result = ctx.train_dense(model, dense_masks, snapshot_at={r} | ({ms} if ms is not None else set()))
        ctx.run_files.save("rewind.pt", result.snapshots[r].to_dict())  # kept with the run: resume needs it
        keep_mask_source(ctx, 0, result, ms)
        return dense_masks, result

    level = ctx.level(0, "dense", model, dense_masks, train_dense)
    yield level
    saved = ctx.run_files.load("rewind.pt")
    snapshot = None if saved is None else TrainState.from_dict(saved)
    if snapshot is None:  # a run saved before the snapshot was: the dense cache still has it
        snapshot = ctx.train_dense(ctx.build_model(), dense_masks, snapshot_at={r}).snapshots[r]
    tickets = None
    if s.retrain in CONTROLS:
        tickets = TicketMasks(ctx, dense_masks, {k: v.detach().clone() for k, v in mask_source(ctx, model, 0, ms).state_dict().items()},
                              snapshot)

    only = None if s.get("only_levels") is None else set(s.only_levels)
    before = level.masks
    for k in range(1, s.levels + 1):
        if only is not None and k not in only and not ctx.finished(k):
            # a level left for a later invocation: a reinit level needs no level before it; a random
            # mask is drawn inside the last one, so its mask is drawn (seeded, cheap) but not trained
            if s.retrain == "random_mask":
                before = random_masks(before, tickets(k), level_seed(ctx.cfg.seed, k))
            continue

        def work(k: int = k, before: MaskSet = before) -> tuple[MaskSet, TrainResult]:
            if tickets is None:
                masks = prune_level(ctx, mask_source(ctx, model, k - 1, ms), before, k)
                if s.retrain == "rewind":
                    ctx.ticket_files.save(TicketMasks.name(k), masks.state_dict())
            elif s.retrain == "reinit":
                masks = tickets(k)
            else:
                masks = random_masks(before, tickets(k), level_seed(ctx.cfg.seed, k))
            result = retrain(ctx, model, masks, snapshot, k, snapshot_at=() if ms is None or tickets is not None else (ms,))
            if tickets is None:
                keep_mask_source(ctx, k, result, ms)
            return masks, result

        level = ctx.level(k, f"level_{k}", model, before, work)
        before = level.masks
        yield level
        if s.target is not None and level.masks.report(model).sparsity >= s.target:
            break
