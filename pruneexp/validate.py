"""Checks of a run config that need the registries: every name known, every range right, every
duration readable, the criterion able to score the granularity. Runs before any data is loaded or
any training starts, so bad input costs nothing."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from omegaconf import OmegaConf, open_dict

from pruneexp.conf_store import METHOD_REGISTRIES, method_schema
from pruneexp.data import DATASETS
from pruneexp.data.imagefolder import LAYOUT
from pruneexp.distributed import Ranks, per_rank_batch
from pruneexp.errors import PruneexpError
from pruneexp.train.accel import check_compile, check_precision
from pruneexp.measure.latency import Target
from pruneexp.models import MODELS
from pruneexp.models.hf import HEADS
from pruneexp.pruning.biases import CRITERIA as BIAS_CRITERIA
from pruneexp.pruning.criteria import CRITERIA, supported_granularities
from pruneexp.pruning.groups import GRANULARITIES, GROUP_REDUCE
from pruneexp.pruning.select import SCOPES
from pruneexp.regularizers import REGULARIZERS
from pruneexp.schedules import SCHEDULES, check_schedule
from pruneexp.schedules.regularized import check_regularizer
from pruneexp.train.durations import check as check_duration
from pruneexp.train.durations import to_steps
from pruneexp.train.optim import LR_SCHEDULES, OPTIMIZER_IMPLS, OPTIMIZERS

# Schedules that prune straight to the final targets (oneshot) or walk towards them level by level (imp)
LAYER_SPARSITY_SCHEDULES = ("oneshot", "oneshot_rewind", "imp")


class UnsupportedPair(PruneexpError):
    """The criterion cannot score the granularity (a sweep may skip such runs: skip_unsupported=true)."""


def check_granularity(cfg: Any) -> None:
    """The granularity is known, its settings are sane, and the criterion can score it."""
    p, c = cfg.prune, cfg.criterion
    if p.granularity not in GRANULARITIES:
        raise PruneexpError(f"Unknown prune.granularity '{p.granularity}'; known: {', '.join(GRANULARITIES)}.")
    for key, allowed in CRITERIA.meta(c.name)["choices"].items():
        if c[key] and c[key] not in allowed:  # "" leaves the criterion its default
            raise PruneexpError(f"Criterion '{c.name}' has no criterion.{key}={c[key]}; it takes: {', '.join(allowed)}.")
    variant = c.get("variant", "")
    can = supported_granularities(c.name, variant)
    if p.granularity not in can:
        variant = f" (variant={variant})" if variant in CRITERIA.meta(c.name)["variants"] else ""
        raise UnsupportedPair(f"Criterion '{c.name}'{variant} cannot score prune.granularity={p.granularity}; "
                              f"it supports: {', '.join(can)}.")
    scopes = CRITERIA.meta(c.name).get("scopes")
    if scopes and p.granularity == "weight" and p.scope not in scopes:
        raise PruneexpError(f"Criterion '{c.name}' chooses its mask per layer: it needs prune.scope in {', '.join(scopes)}, not {p.scope}.")
    if p.group_reduce not in GROUP_REDUCE:
        raise PruneexpError(f"Unknown prune.group_reduce '{p.group_reduce}'; known: {', '.join(GROUP_REDUCE)}.")
    if p.granularity == "nm":
        if not 1 <= p.n < p.m:
            raise PruneexpError(f"prune.n={p.n}, prune.m={p.m}: N:M sparsity needs 1 <= N < M (e.g. 2:4).")
        if abs(cfg.sparsity - (1 - p.n / p.m)) > 1e-9:
            raise PruneexpError(f"At prune.granularity=nm the sparsity is 1 - N/M = {1 - p.n / p.m:g}; set sparsity={1 - p.n / p.m:g}.")
        if SCHEDULES.meta(cfg.schedule.name).get("levelwise"):
            raise PruneexpError(f"schedule={cfg.schedule.name} raises the sparsity level by level, but an N:M mask has one "
                                f"sparsity (1 - N/M); use schedule=oneshot or schedule=at_init with prune.granularity=nm.")
    if p.granularity == "block" and (len(p.block) != 2 or min(p.block) < 1):
        raise PruneexpError(f"prune.block must be two positive sizes [rows, columns], got {list(p.block)}.")


def typed_config(cfg: Any) -> Any:
    """`cfg` with its model, criterion and schedule nodes typed by the named method's own schema
    (options it does not set take their defaults). A node composed for another method, e.g. by
    `criterion.name=obd` on top of magnitude, gets the named method's options; one that carries
    options the named method does not have is refused, naming them."""
    cfg = cfg.copy()
    for group in METHOD_REGISTRIES:
        if group not in cfg:  # a config composed without the group (regularizer): its default
            continue
        node = cfg[group]
        if group == "model" and node.get("source", "pruneexp") != "pruneexp":
            continue
        schema = method_schema(group, node.name)
        if OmegaConf.get_type(node) is schema:
            continue
        extra = sorted(set(node.keys()) - {f.name for f in dataclasses.fields(schema)})
        if extra:
            raise PruneexpError(f"{group} '{node.name}' has no option {', '.join(extra)} (they belong to the {group} the config "
                                f"was composed with); select it with {group}={node.name} and set only its own options.")
        with open_dict(cfg):
            cfg[group] = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(node))
    return cfg


def check_tokens(cfg: Any) -> None:
    """A pretrained model reads its own tokens, and its head decides the data: model=hf with
    head=causal_lm only with dataset=tokens, with head=sequence_classification only with
    dataset=text_classification (the ids of any other dataset mean other words to it, and a head
    meets only the targets it was built for); post-training calibration reads every one of
    dataset.nsamples windows (the number levels.csv records)."""
    head = cfg.model.get("head", "causal_lm") if cfg.model.name == "hf" else None
    if head is not None and head not in HEADS:
        raise PruneexpError(f"model.head={head!r} is not one of {', '.join(HEADS)}.")
    if head == "causal_lm" and cfg.dataset.name != "tokens":
        raise PruneexpError(f"model=hf reads token ids of its own tokenizer, and dataset={cfg.dataset.name} gives other ids "
                            "(dataset=text: character ids). Use dataset=tokens (dataset.path=<local text>, or none for the "
                            "pydoc help topics), which tokenizes with the model's tokenizer; or, for labelled text, "
                            "model.head=sequence_classification with dataset=text_classification.")
    if head == "sequence_classification" and cfg.dataset.name != "text_classification":
        raise PruneexpError(f"model=hf model.head=sequence_classification classifies labelled text in its own tokens, and "
                            f"dataset={cfg.dataset.name} is not that; use dataset=text_classification dataset.path=<a local "
                            "(text, label) .csv/.tsv/.jsonl or a GLUE task folder>.")
    if cfg.dataset.name == "text_classification" and head != "sequence_classification":
        raise PruneexpError(f"dataset=text_classification gives token ids of a pretrained model's tokenizer with class labels; "
                            f"use it with model=hf model.head=sequence_classification, not model={cfg.model.name}"
                            f"{' model.head=' + head if head else ''}.")
    if cfg.dataset.name == "tokens" and cfg.schedule.name == "posttrain":
        reads = cfg.criterion.batches * cfg.criterion.batch_size
        if reads < cfg.dataset.nsamples:
            raise PruneexpError(f"criterion.batches x criterion.batch_size = {reads} calibration sequences read only part of the "
                                f"dataset.nsamples = {cfg.dataset.nsamples} windows; set criterion.batches = "
                                f"{-(-cfg.dataset.nsamples // cfg.criterion.batch_size)} (or lower dataset.nsamples).")


def check_dataset(d: Any) -> None:
    """The streamed-data options are in range; dataset=imagefolder names its folder."""
    if d.get("workers", 0) < 0 or d.get("prefetch_factor", 1) < 1:
        raise PruneexpError(f"dataset.workers={d.workers} must be >= 0 (0: read in the training process) and "
                            f"dataset.prefetch_factor={d.prefetch_factor} >= 1.")
    if d.name == "imagefolder":
        if d.image_size < 8:
            raise PruneexpError(f"dataset.image_size={d.image_size} is too small a crop; e.g. 224 (ImageNet) or 64 (Tiny-ImageNet).")
        if not d.path:
            raise PruneexpError(f"dataset=imagefolder needs dataset.path, the folder of its images. {LAYOUT}")


def check_processes(cfg: Any) -> None:
    """hardware.devices and the process count of the environment (torchrun, SLURM tasks) against
    the global batch, which every step splits evenly over the processes."""
    devices = cfg.hardware.get("devices", 1)
    if devices < 1:
        raise PruneexpError(f"hardware.devices={devices} must be at least 1 (the number of processes of the run).")
    if cfg.hardware.get("dist_timeout_s", 1) < 1:
        raise PruneexpError(f"hardware.dist_timeout_s={cfg.hardware.dist_timeout_s} must be a positive number of seconds.")
    env = Ranks.from_env().world
    world = env if env > 1 else devices
    if world > 1:
        per_rank_batch(cfg.train.batch_size, world)
        if str(cfg.hardware.device).startswith("cuda:"):
            raise PruneexpError(f"hardware.device={cfg.hardware.device} with {world} processes: each process takes the GPU "
                                "of its local rank; use hardware.device=cuda.")
        if str(cfg.hardware.device).startswith("cuda") and env <= 1 and devices > torch.cuda.device_count():
            raise PruneexpError(f"hardware.devices={devices}, but this machine has {torch.cuda.device_count()} GPU(s); "
                                f"use at most {torch.cuda.device_count()} (or several nodes through torchrun / SLURM).")


def validate(cfg: Any) -> None:
    """Raise a PruneexpError naming the first thing wrong with `cfg` (typed by `typed_config`)."""
    DATASETS.get(cfg.dataset.name)
    if cfg.model.source == "pruneexp":
        MODELS.get(cfg.model.name)
    CRITERIA.get(cfg.criterion.name)
    SCHEDULES.get(cfg.schedule.name)
    REGULARIZERS.get(cfg.regularizer.name)
    cfg = typed_config(cfg)
    check_schedule(cfg)
    check_regularizer(cfg)
    if not 0.0 <= cfg.sparsity < 1.0:
        raise PruneexpError(f"sparsity={cfg.sparsity} is outside [0, 1): it is the fraction of prunable weights removed, e.g. sparsity=0.9.")
    p = cfg.prune
    if p.scope not in SCOPES:
        raise PruneexpError(f"Unknown prune.scope '{p.scope}'; known: {', '.join(SCOPES)}.")
    check_granularity(cfg)
    if p.scope == "row" and p.granularity != "weight":
        raise PruneexpError(f"prune.scope=row compares weights within each output row; it needs prune.granularity=weight, not {p.granularity}.")
    if p.layer_rates and p.scope != "layerwise":
        raise PruneexpError(f"prune.layer_rates needs prune.scope=layerwise: a {p.scope} allocation has no per-layer rate.")
    if p.layer_sparsity:
        if p.scope != "layerwise" or p.layer_rates:
            raise PruneexpError("prune.layer_sparsity needs prune.scope=layerwise and no prune.layer_rates: it sets each layer's sparsity itself.")
        if cfg.schedule.name not in LAYER_SPARSITY_SCHEDULES:
            raise PruneexpError(f"prune.layer_sparsity gives final per-layer targets, which schedule={cfg.schedule.name} does not "
                                f"walk towards; it works with {', '.join(LAYER_SPARSITY_SCHEDULES)}.")
        if cfg.schedule.name == "imp" and cfg.schedule.target is not None:
            raise PruneexpError("prune.layer_sparsity with schedule=imp reaches its targets at the last of schedule.levels; "
                                "schedule.target must be null.")
        if p.biases or cfg.schedule.get("rounds", "geometric") == "linear":
            raise PruneexpError("prune.layer_sparsity sets each layer's final sparsity itself; it does not combine with "
                                "prune.biases=true or schedule.rounds=linear.")
    if p.biases:
        if p.granularity != "weight" or p.scope not in ("layerwise", "global"):
            raise PruneexpError(f"prune.biases=true ranks each layer's bias with its weights as one vector; it needs "
                                f"prune.granularity=weight and prune.scope=layerwise or global (got {p.granularity}, {p.scope}).")
        if cfg.criterion.name not in BIAS_CRITERIA:
            raise PruneexpError(f"prune.biases=true scores biases as weights, which criterion '{cfg.criterion.name}' cannot "
                                f"(it scores a weight from its layer's inputs or gradients); use one of: {', '.join(BIAS_CRITERIA)}.")
    if cfg.criterion.batches < 1 or cfg.criterion.batch_size < 1:
        raise PruneexpError("criterion.batches and criterion.batch_size must be at least 1.")
    check_tokens(cfg)
    check_dataset(cfg.dataset)
    t = cfg.train
    if not 0.0 <= t.get("label_smoothing", 0.0) < 1.0:
        raise PruneexpError(f"train.label_smoothing={t.label_smoothing} must be in [0, 1) (torchvision's ImageNet recipe: 0.1).")
    if t.optimizer not in OPTIMIZERS:
        raise PruneexpError(f"Unknown train.optimizer '{t.optimizer}'; known: {', '.join(OPTIMIZERS)}.")
    if t.batch_order not in ("shuffle", "fixed"):
        raise PruneexpError(f"Unknown train.batch_order '{t.batch_order}'; known: shuffle, fixed.")
    if t.optimizer_impl not in OPTIMIZER_IMPLS:
        raise PruneexpError(f"Unknown train.optimizer_impl '{t.optimizer_impl}'; known: {', '.join(OPTIMIZER_IMPLS)}.")
    phases = [("train", t)] + ([("schedule.finetune", cfg.schedule.finetune)] if "finetune" in cfg.schedule else [])
    for where, sched in phases:
        if sched.lr_schedule not in LR_SCHEDULES:
            raise PruneexpError(f"Unknown {where}.lr_schedule '{sched.lr_schedule}'; known: {', '.join(LR_SCHEDULES)}.")
        check_duration(sched.duration)
        check_duration(sched.warmup)
    check_duration(t.eval_every)
    for m in t.milestones:
        check_duration(m)
    if t.batch_size < 1:
        raise PruneexpError(f"train.batch_size={t.batch_size} must be at least 1.")
    if not t.lr > 0 or t.lr == float("inf"):
        raise PruneexpError(f"train.lr={t.lr} must be a positive finite number, e.g. train.lr=0.1.")
    if to_steps(t.duration, 1) == 0:
        raise PruneexpError(f"train.duration={t.duration} trains nothing: the network would be pruned untrained. "
                            "Give a positive duration, e.g. train.duration=20ep (schedule=at_init prunes before training anyway).")
    ft = cfg.schedule.get("finetune") or {}
    if ft.get("lr") is not None and (not ft.lr > 0 or ft.lr == float("inf")):
        raise PruneexpError(f"schedule.finetune.lr={ft.lr} must be a positive finite number.")
    threads = cfg.hardware.get("threads")
    if threads is not None and threads < 1:
        raise PruneexpError(f"hardware.threads={threads} must be at least 1 (or null for torch's default).")
    every = cfg.hardware.get("checkpoint_every")
    if every is not None:
        check_duration(str(every))
        if to_steps(str(every), 1) == 0:
            raise PruneexpError(f"hardware.checkpoint_every={every} must be a positive duration (e.g. 5ep or 2000it), or null for none.")
    Target.from_config(cfg.hardware)  # dtype, forms, batch sizes, timing protocol, levels
    device = str(cfg.hardware.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PruneexpError(f"hardware={cfg.hardware.name} asks for device '{device}', but no CUDA device is available here; use hardware=cpu.")
    check_precision(t.get("precision", "fp32"), torch.device(device))
    if t.get("compile", False):
        check_compile(torch.device(device).type)
    check_processes(cfg)
