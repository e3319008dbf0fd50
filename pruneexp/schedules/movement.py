"""Movement pruning (Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptive Sparsity by Fine-Tuning").

Each prunable weight W gets a score S (initialised to 0), trained beside W: the layer computes with
W' = W ⊙ M(S), and the mask's gradient passes straight through (straight-through estimator), so

    ∂L/∂S = ∂L/∂W' · W        (S grows for weights moving away from zero: "movement")

- hard (`variant=hard`): M(S) = Top_v(S), the (1 - s_t) fraction of largest scores of each layer,
  s_t following Zhu & Gupta's cubic from `initial_sparsity` at `start` to `sparsity` at `end`
  (the schedule `gmp` uses);
- soft (`variant=soft`): M(S) = 1(σ(S) > τ), with `penalty` λ · mean σ(S) added to the loss
  (Sanh's L1 on the scores' sigmoid); the sparsity is what the threshold leaves (τ is fixed here;
  the paper moves it along the cubic, not implemented).

The scores are trained by the run's optimizer. Sanh's reference code (masked_run_glue.py) gives them
a parameter group of their own, `mask_scores` at `--mask_scores_learning_rate` (1e-2) and no weight
decay, under the same LR schedule as the weights: `score_lr` and `score_weight_decay` here (null:
`train.lr` and `train.weight_decay`, one group, as before these options existed). Its warm-ups map
onto `start` and `end`: the sparsity is held at `initial_sparsity` until `start` (initial warm-up)
and at `sparsity` from `end` to the end of `train.duration` (final warm-up).

The layers are reparameterised (torch.nn.utils.parametrize) for the training and folded back to
plain weights W ⊙ M plus a MaskSet at the end, so measure, shrink, bench and report see a plain
masked network. `frozen_weights=true` trains the scores only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from pruneexp.config import ScheduleConfig
from pruneexp.errors import PruneexpError
from pruneexp.pruning.masks import MaskSet
from pruneexp.pruning.select import n_to_keep, top_k_mask
from pruneexp.schedules import SCHEDULES
from pruneexp.schedules.context import Level, RunContext
from pruneexp.schedules.gmp import cubic_sparsity
from pruneexp.train import Sparsifier, steps_per_epoch
from pruneexp.train.durations import check as check_duration
from pruneexp.train.durations import to_steps


@dataclass
class MovementConfig(ScheduleConfig):
    variant: str = "hard"  # hard (top-k of the scores, cubic schedule) | soft (threshold tau, penalty on sigmoid(S))
    start: str = "0it"
    end: str = "10ep"
    initial_sparsity: float = 0.0
    threshold: float = 0.1  # soft: tau on sigmoid(S) (scores start at 0: sigmoid 0.5, all kept)
    penalty: float = 0.0  # soft: lambda of lambda * mean sigmoid(S)
    frozen_weights: bool = False
    # the scores' own parameter group (Sanh's `mask_scores`: lr 1e-2, weight decay 0); null: train.lr /
    # train.weight_decay, the scores in the weights' group (hash-neutral at null)
    score_lr: Optional[float] = None
    score_weight_decay: Optional[float] = None


class ScoredMask(nn.Module):
    """The parametrization W -> W ⊙ M(S) with a straight-through gradient to the scores S."""

    def __init__(self, shape: torch.Size, state: dict[str, Any]):
        super().__init__()
        self.scores = nn.Parameter(torch.zeros(shape))
        self.state = state  # shared: variant, sparsity (hard), threshold (soft)

    def mask(self) -> Tensor:
        s = self.scores.detach()
        if self.state["variant"] == "hard":
            return top_k_mask(s.flatten(), n_to_keep(s.numel(), self.state["sparsity"])).view_as(s)
        return torch.sigmoid(s) > self.state["threshold"]  # Sanh's code thresholds the scores' sigmoid

    def forward(self, w: Tensor) -> Tensor:
        m = self.mask().to(w.dtype)
        return w * (m + self.scores - self.scores.detach())  # value W ⊙ M; ∂/∂S = W, ∂/∂W = M


class Movement(Sparsifier):
    """Moves the hard variant's sparsity along the cubic after each step; adds the soft penalty."""

    def __init__(self, state: dict[str, Any], cfg: Any, t0: int, t_end: int, target: float, parts: list[ScoredMask],
                 train_cfg: Any = None):
        self.state, self.cfg, self.t0, self.t_end, self.target, self.parts = state, cfg, t0, t_end, target, parts
        self.train_cfg = train_cfg

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        """The weights at train.lr and weight decay; the scores in a group of their own when
        `score_lr` or `score_weight_decay` is set (Sanh's `mask_scores` group), else None (one group)."""
        c, t = self.cfg, self.train_cfg
        if c.score_lr is None and c.score_weight_decay is None:
            return None
        scores = [p.scores for p in self.parts]
        ids = {id(p) for p in scores}
        return [dict(params=[p for p in model.parameters() if id(p) not in ids]),
                dict(params=scores, lr=t.lr if c.score_lr is None else c.score_lr,
                     weight_decay=t.weight_decay if c.score_weight_decay is None else c.score_weight_decay)]

    def sparsity_at(self, t: int) -> float:
        return cubic_sparsity(t, self.cfg.initial_sparsity, self.target, self.t0, 1, max(1, self.t_end - self.t0))

    def penalty(self, model: nn.Module, step: int) -> Tensor | None:
        if self.state["variant"] != "soft" or self.cfg.penalty == 0:
            return None
        return self.cfg.penalty * torch.stack([torch.sigmoid(p.scores).mean() for p in self.parts]).mean()

    def after_step(self, model: nn.Module, step: int, masks: MaskSet, optimizer: torch.optim.Optimizer) -> None:
        self.state["sparsity"] = self.sparsity_at(step + 1)

    def state_dict(self) -> dict[str, Any]:
        return {"state": dict(self.state)}  # the shared variant / sparsity / threshold the scored layers read

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state.update(state["state"])

    def log(self) -> dict[str, Any]:
        kept = sum(int(p.mask().sum()) for p in self.parts)
        return dict(movement_sparsity=round(1 - kept / sum(p.scores.numel() for p in self.parts), 6))


def check(cfg: Any) -> None:
    s = cfg.schedule
    if s.variant not in ("hard", "soft"):
        raise PruneexpError(f"schedule.variant={s.variant}: movement pruning is hard (top-k) or soft (threshold).")
    for d in (s.start, s.end):
        check_duration(d)
    if cfg.prune.granularity != "weight":
        raise PruneexpError(f"schedule=movement learns a score per weight; prune.granularity={cfg.prune.granularity} is not "
                            f"supported: use prune.granularity=weight.")
    if not 0.0 <= s.initial_sparsity <= cfg.sparsity:
        raise PruneexpError(f"schedule.initial_sparsity={s.initial_sparsity} must be in [0, sparsity={cfg.sparsity}].")
    for key in ("score_lr", "score_weight_decay"):
        value = s.get(key)
        if value is not None and not (0.0 <= value < float("inf") and (key != "score_lr" or value > 0)):
            raise PruneexpError(f"schedule.{key}={value} must be a {'positive' if key == 'score_lr' else 'non-negative'} finite "
                                f"number (or null: the weights' train.{key.removeprefix('score_')}).")


def reparameterise(model: nn.Module, names: list[str], state: dict[str, Any]) -> list[ScoredMask]:
    modules = dict(model.named_modules())
    parts = []
    for name in names:
        owner, attr = name.rsplit(".", 1) if "." in name else ("", name)
        module = modules[owner]
        part = ScoredMask(getattr(module, attr).shape, state).to(getattr(module, attr).device)
        parametrize.register_parametrization(module, attr, part)
        parts.append(part)
    return parts


def fold(model: nn.Module, names: list[str], parts: list[ScoredMask]) -> MaskSet:
    """Back to plain weights W ⊙ M and the MaskSet of M."""
    modules = dict(model.named_modules())
    masks = {}
    for name, part in zip(names, parts):
        masks[name] = part.mask().clone()
        owner, attr = name.rsplit(".", 1) if "." in name else ("", name)
        parametrize.remove_parametrizations(modules[owner], attr, leave_parametrized=True)
    return MaskSet(masks, names)


@SCHEDULES.register("movement", check=check, config=MovementConfig)
def movement(ctx: RunContext) -> Iterator[Level]:
    """Levels: 0 the dense network at initialisation (or as loaded), 1 trained with movement
    pruning for `train.duration` (one `train()` call, one optimizer holding weights and scores)."""
    s, train_cfg = ctx.cfg.schedule, ctx.train_cfg()
    spe = steps_per_epoch(ctx.data, train_cfg.batch_size)
    t0, t_end = to_steps(s.start, spe), to_steps(s.end, spe)
    total = to_steps(train_cfg.duration, spe)
    if s.variant == "hard" and not t0 < t_end <= total:
        raise PruneexpError(f"schedule=movement (hard) needs schedule.start < schedule.end <= train.duration, or the target "
                            f"sparsity is never reached (got start={t0}, end={t_end}, duration={total} steps).")
    model = ctx.build_model()
    dense = ctx.dense_masks(model)
    yield ctx.level(0, "init", model, dense, lambda: (dense, None))
    names = list(dense.weights)

    def run():
        state = dict(variant=s.variant, sparsity=float(s.initial_sparsity), threshold=float(s.threshold))
        if s.frozen_weights:
            for p in ctx.prunable(model).values():
                p.requires_grad_(False)
        parts = reparameterise(model, names, state)
        hook = Movement(state, s, t0, t_end, ctx.cfg.sparsity, parts, train_cfg)
        state["sparsity"] = hook.sparsity_at(0)
        result = ctx.train(model, MaskSet({}), train_cfg, "movement", 1, sparsifier=hook)
        masks = fold(model, names, parts)
        for p in model.parameters():
            p.requires_grad_(True)
        return masks, result

    yield ctx.with_live_units(ctx.level(1, "trained", model, dense, run))
