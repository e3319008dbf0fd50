"""The training loop: one visible function, data resident on the device (airbench / nanoGPT style).

Everything a step depends on is a function of (seed, step): the data order of an epoch is a
permutation seeded by (seed, epoch), the augmentation of a batch is seeded by (seed, step) and
the learning rate is a pure function of the step. A snapshot (weights, optimizer state, step and
global RNG state) therefore resumes or rewinds training exactly (OpenLTH's rewinding).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Collection

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn

from pruneexp.data import DataSplits
from pruneexp.pruning.masks import MaskSet
from pruneexp.train.durations import to_steps
from pruneexp.train.evaluate import evaluate
from pruneexp.train.optim import lr_factor, make_optimizer


@dataclass
class TrainState:
    """All that training at `step` depends on, so it can continue exactly from there."""

    step: int
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    rng: Tensor

    @classmethod
    def capture(cls, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> "TrainState":
        return cls(step, copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), torch.get_rng_state())


@dataclass
class TrainResult:
    steps: int  # the step training stopped at
    val_loss: float = float("nan")
    val_acc: float = float("nan")
    test_loss: float = float("nan")
    test_acc: float = float("nan")
    best_val_acc: float = float("nan")
    best_step: int = -1  # step of minimum validation loss (the LTH "early-stop iteration")
    test_acc_at_best: float = float("nan")
    snapshots: dict[int, TrainState] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)


def steps_per_epoch(data: DataSplits, batch_size: int) -> int:
    """Full batches per pass over the training split (the last partial batch is dropped; the
    order is reshuffled every epoch, so every example is seen)."""
    return max(1, len(data.train_x) // batch_size)


def epoch_order(seed: int, epoch: int, n: int, device: torch.device) -> Tensor:
    """The training-set permutation of one epoch, a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def train(
    model: nn.Module,
    data: DataSplits,
    masks: MaskSet,
    cfg: Any,
    *,
    seed: int,
    phase: str = "train",
    state: TrainState | None = None,
    stop: int | None = None,
    snapshot_at: Collection[int] = (),
    quiet: bool = False,
) -> TrainResult:
    """Train `model` on `data` with the optimizer and LR schedule of `cfg` for `cfg.duration`,
    re-applying `masks` after every optimizer step. Starts from `state` when given (resume or
    rewind) and stops at step `stop` (default: the end of the duration); captures a TrainState at
    each step in `snapshot_at`; evaluates on validation and test every `cfg.eval_every` and at the end."""
    device = data.train_x.device
    bs = cfg.batch_size
    spe = steps_per_epoch(data, bs)
    total = to_steps(cfg.duration, spe)
    stop = total if stop is None else stop
    eval_every = max(1, to_steps(cfg.eval_every, spe))
    optimizer = make_optimizer(model.parameters(), cfg)
    factor = lr_factor(cfg, total, spe)
    start = 0
    if state is not None:
        model.load_state_dict(state.model)
        # a copy: the optimizer updates its state tensors in place, and a snapshot may be rewound to again
        optimizer.load_state_dict(copy.deepcopy(state.optimizer))
        torch.set_rng_state(state.rng)
        start = state.step
    reapply_masks = masks.binder(model)
    reapply_masks()
    aug_gen = torch.Generator(device=device) if data.augment is not None else None
    result = TrainResult(steps=start)
    if start in snapshot_at:
        result.snapshots[start] = TrainState.capture(start, model, optimizer)
    running, seen, order, order_epoch = torch.zeros((), device=device), 0, None, -1
    best_val_loss, best_val_acc, t0 = float("inf"), 0.0, time.perf_counter()
    progress = _progress(quiet, phase, stop - start)

    model.train()
    for step in range(start, stop):
        epoch, i = divmod(step, spe)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(seed, epoch, len(data.train_x), device), epoch
        idx = order[i * bs : (i + 1) * bs]
        x, y = data.train_x[idx], data.train_y[idx]
        if aug_gen is not None:
            x = data.augment(x, aug_gen.manual_seed(seed * 1_000_003 + step))
        lr = cfg.lr * factor(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        reapply_masks()
        running.add_(loss.detach())
        seen += 1

        done = step + 1
        if done in snapshot_at:
            result.snapshots[done] = TrainState.capture(done, model, optimizer)
        if done % eval_every == 0 or done == stop:
            val_loss, val_acc = evaluate(model, data.val_x, data.val_y, cfg.eval_batch_size)
            test_loss, test_acc = evaluate(model, data.test_x, data.test_y, cfg.eval_batch_size)
            result.log.append(dict(phase=phase, step=done, epoch=round(done / spe, 4), lr=lr, train_loss=running.item() / seen,
                                   val_loss=val_loss, val_acc=val_acc, test_loss=test_loss, test_acc=test_acc,
                                   elapsed_s=round(time.perf_counter() - t0, 3)))
            if val_loss < best_val_loss:
                best_val_loss, result.best_step, result.test_acc_at_best = val_loss, done, test_acc
            best_val_acc = result.best_val_acc = max(best_val_acc, val_acc)
            result.val_loss, result.val_acc, result.test_loss, result.test_acc = val_loss, val_acc, test_loss, test_acc
            running.zero_()
            seen = 0
            if progress is not None:
                progress.update(progress.task_ids[0], completed=done - start, description=f"{phase} val_acc={val_acc:.4f}")
    result.steps = stop
    if progress is not None:
        progress.stop()
    return result


def _progress(quiet: bool, phase: str, steps: int) -> Progress | None:
    """A rich progress bar, updated at each evaluation (never per step: the hot loop stays clean).
    None when quiet or when stdout is not a terminal."""
    if quiet or steps <= 0:
        return None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
    if not progress.console.is_terminal:
        return None
    progress.add_task(phase, total=steps)
    progress.start()
    return progress
