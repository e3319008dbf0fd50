"""Checks of a run config that need the registries: every name known, every range right, every
duration readable, the criterion able to score the granularity. Runs before any data is loaded or
any training starts, so bad input costs nothing."""

from __future__ import annotations

from typing import Any

import torch

from pruneexp.data import DATASETS
from pruneexp.errors import PruneexpError
from pruneexp.measure.latency import Target
from pruneexp.models import MODELS
from pruneexp.pruning.criteria import CRITERIA, supported_granularities
from pruneexp.pruning.select import GRANULARITIES, SCOPES
from pruneexp.schedules import SCHEDULES, check_schedule
from pruneexp.train.durations import check as check_duration
from pruneexp.train.optim import LR_SCHEDULES, OPTIMIZERS


def validate(cfg: Any) -> None:
    """Raise a PruneexpError naming the first thing wrong with `cfg`."""
    DATASETS.get(cfg.dataset.name)
    if cfg.model.source == "pruneexp":
        MODELS.get(cfg.model.name)
    CRITERIA.get(cfg.criterion.name)
    SCHEDULES.get(cfg.schedule.name)
    check_schedule(cfg)
    if not 0.0 <= cfg.sparsity < 1.0:
        raise PruneexpError(f"sparsity={cfg.sparsity} is outside [0, 1): it is the fraction of prunable weights removed, e.g. sparsity=0.9.")
    p = cfg.prune
    if p.scope not in SCOPES:
        raise PruneexpError(f"Unknown prune.scope '{p.scope}'; known: {', '.join(SCOPES)}.")
    if p.granularity not in GRANULARITIES:
        raise PruneexpError(f"Unknown prune.granularity '{p.granularity}'; known: {', '.join(GRANULARITIES)}.")
    can = supported_granularities(cfg.criterion.name)
    if p.granularity not in can:
        raise PruneexpError(f"Criterion '{cfg.criterion.name}' cannot score prune.granularity={p.granularity}; it supports: {', '.join(can)}.")
    if p.layer_rates and p.scope == "global":
        raise PruneexpError("prune.layer_rates needs prune.scope=layerwise: a global ranking has no per-layer rate.")
    if cfg.criterion.batches < 1 or cfg.criterion.batch_size < 1:
        raise PruneexpError("criterion.batches and criterion.batch_size must be at least 1.")
    t = cfg.train
    if t.optimizer not in OPTIMIZERS:
        raise PruneexpError(f"Unknown train.optimizer '{t.optimizer}'; known: {', '.join(OPTIMIZERS)}.")
    for where, sched in (("train", t), ("schedule.finetune", cfg.schedule.finetune)):
        if sched.lr_schedule not in LR_SCHEDULES:
            raise PruneexpError(f"Unknown {where}.lr_schedule '{sched.lr_schedule}'; known: {', '.join(LR_SCHEDULES)}.")
        check_duration(sched.duration)
        check_duration(sched.warmup)
    check_duration(t.eval_every)
    for m in t.milestones:
        check_duration(m)
    if t.batch_size < 1 or t.lr <= 0:
        raise PruneexpError("train.batch_size must be at least 1 and train.lr positive.")
    Target.from_config(cfg.hardware)  # dtype, forms, batch sizes, timing protocol, levels
    device = str(cfg.hardware.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PruneexpError(f"hardware={cfg.hardware.name} asks for device '{device}', but no CUDA device is available here; use hardware=cpu.")
