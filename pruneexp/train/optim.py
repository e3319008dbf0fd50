"""Optimizers and learning-rate schedules, as pure functions of the step (so rewinding is exact)."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch

from pruneexp.errors import PruneexpError
from pruneexp.train.durations import to_steps

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "multistep", "cosine", "linear")


OPTIMIZER_IMPLS = ("fused", "foreach")
# train.optimizer_impl -> torch keyword. fused (the default): one kernel for the whole update, the
# fastest and deterministic. foreach: one kernel per operation over all parameters; on CPU the same
# bits as torch's single-tensor loop (a test holds it to that), i.e. the arithmetic of every run made
# before the option existed, which is why a config without the key means foreach.
IMPL = {"foreach": dict(foreach=True), "fused": dict(fused=True)}


def make_optimizer(params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], cfg: Any) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW from the train config, in the implementation
    `cfg.optimizer_impl` names (fused by default; a config without the key predates it: foreach).
    `params` are parameters, or torch's parameter groups (dicts) where some take their own lr or
    weight decay (the config's values are the defaults of the others)."""
    params = list(params)
    impl = getattr(cfg, "optimizer_impl", "foreach")
    if impl not in IMPL:
        raise PruneexpError(f"Unknown train.optimizer_impl '{impl}'; known: {', '.join(OPTIMIZER_IMPLS)}.")
    kw = IMPL[impl]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay, **kw)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **kw)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **kw)
    raise PruneexpError(f"Unknown train.optimizer '{cfg.optimizer}'; known: {', '.join(OPTIMIZERS)}.")


def lr_factor(cfg: Any, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base LR at each step: linear warm-up from 0 over `warmup`, then
    constant, multistep (x gamma at each milestone), cosine to 0 at `total_steps`, or linear:
    constant until the first milestone (none: from the end of warm-up), then linearly to 0 at
    `total_steps` (Molchanov et al. 2017's `lr_linear`: 1e-3 to epoch 100, 0 at epoch 200)."""
    warmup = to_steps(cfg.warmup, steps_per_epoch)
    kind = cfg.lr_schedule
    if kind not in LR_SCHEDULES:
        raise PruneexpError(f"Unknown lr_schedule '{kind}'; known: {', '.join(LR_SCHEDULES)}.")
    milestones = sorted(to_steps(m, steps_per_epoch) for m in getattr(cfg, "milestones", []) or [])
    gamma = getattr(cfg, "gamma", 0.1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        if kind == "multistep":
            return gamma ** sum(step >= m for m in milestones)
        if kind == "linear":
            begin = max(warmup, milestones[0]) if milestones else warmup
            return 1.0 if step < begin else max(0.0, (total_steps - step) / max(1, total_steps - begin))
        span = max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))

    return factor
