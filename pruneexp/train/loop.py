"""The training loop: one visible function, data resident on the device (airbench / nanoGPT style)
or streamed by DataLoader workers (`training_batches`: the one place a step's batch comes from).

Everything a step depends on is a function of (seed, step): the data order of an epoch is a
permutation seeded by (seed, epoch), the augmentation of a batch is seeded by (seed, step) and
the learning rate is a pure function of the step. A snapshot (weights, optimizer state, step and
global RNG state) therefore resumes or rewinds training exactly (OpenLTH's rewinding).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Collection, Iterator

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn

from pruneexp import distributed
from pruneexp.data import DataSplits, StreamSplits
from pruneexp.errors import TrainingDiverged
from pruneexp.pruning.masks import MaskSet
from pruneexp.train import accel
from pruneexp.train.checkpoint import Checkpoint
from pruneexp.train.durations import to_steps
from pruneexp.train.optim import lr_factor, make_optimizer
from pruneexp.train.sparsifier import Sparsifier
from pruneexp.train.task import TASKS, Task


@dataclass
class TrainState:
    """All that training at `step` depends on, so it can continue exactly from there: weights,
    optimizer state, and the CPU and CUDA random generators (dropout, augmentation on the device).
    Saved as plain tensors, numbers and strings (`to_dict`), so it loads with `weights_only=True`."""

    step: int
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    rng: Tensor
    cuda_rng: list[Tensor] = field(default_factory=list)
    scaler: dict[str, Any] = field(default_factory=dict)  # fp16: the GradScaler's loss scale and growth count

    @classmethod
    def capture(cls, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler | None = None) -> "TrainState":
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        return cls(step, copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), torch.get_rng_state(), cuda,
                   scaler.state_dict() if scaler is not None else {})

    def restore_rng(self) -> None:
        torch.set_rng_state(self.rng)
        if self.cuda_rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda_rng)

    def to_dict(self) -> dict[str, Any]:
        d = dict(step=self.step, model=self.model, optimizer=self.optimizer, rng=self.rng, cuda_rng=list(self.cuda_rng))
        return {**d, "scaler": dict(self.scaler)} if self.scaler else d  # fp32 and bf16 files as before

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainState":
        return cls(int(d["step"]), d["model"], d["optimizer"], d["rng"], list(d.get("cuda_rng", [])), dict(d.get("scaler", {})))


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
    final: dict[str, float] = field(default_factory=dict)  # val_* and test_* metrics at the last step

    def to_dict(self) -> dict[str, Any]:
        """Plain data (numbers, strings, tensors) for `torch.save` / `torch.load(weights_only=True)`."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["snapshots"] = {int(k): v.to_dict() for k, v in self.snapshots.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainResult":
        d = dict(d)
        d["snapshots"] = {int(k): TrainState.from_dict(v) for k, v in d.get("snapshots", {}).items()}
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def steps_per_epoch(data: DataSplits | StreamSplits, batch_size: int) -> int:
    """Full batches per pass over the training split (the last partial batch is dropped; the
    order is reshuffled every epoch, so every example is seen)."""
    return max(1, len(data.train_y) // batch_size)


def epoch_order(seed: int, epoch: int, n: int, device: torch.device) -> Tensor:
    """The training-set permutation of one epoch, a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def batch_order(cfg: Any, seed: int, epoch: int, n: int, device: torch.device) -> Tensor:
    """The order the training split is read in during `epoch`: `epoch_order` under
    `train.batch_order=shuffle` (the default), the stored order every epoch under `fixed`."""
    if getattr(cfg, "batch_order", "shuffle") == "fixed":
        return torch.arange(n, device=device)
    return epoch_order(seed, epoch, n, device)


def batch_indices(order: Tensor, i: int, batch_size: int, rank: int = 0, world: int = 1) -> Tensor:
    """The examples of global batch `i` of an epoch read in `order` that process `rank` of `world`
    trains on: its contiguous 1/world share of the global batch (the config's batch size), so the
    ranks together take exactly the 1-process batch and DDP's gradient average is its gradient."""
    per = batch_size // world
    start = i * batch_size + rank * per
    return order[start : start + per]


def training_batches(data: DataSplits | StreamSplits, cfg: Any, seed: int, start: int, stop: int,
                     rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
    """The (x, y) that process `rank` of `world` trains on at steps start, ..., stop - 1: its share
    of global batch i = s mod spe of epoch e = s // spe of `batch_order(cfg, seed, e)` (`batch_indices`;
    the whole batch in one process). Resident data are augmented on the device by a generator seeded
    by (seed, s), drawn for the whole global batch and then split, as one process draws it; streamed
    data (StreamSplits) per image by (seed, e, index) in the DataLoader's workers, so a rank reads
    only its share. A function of (seed, step) only: a resumed or rewound segment, or another
    process count, reads the batches an uninterrupted one-process run read."""
    bs, n, device = cfg.batch_size, len(data.train_y), data.device
    spe = steps_per_epoch(data, bs)
    streamed = isinstance(data, StreamSplits)
    aug_gen = torch.Generator(device=device) if not streamed and data.augment is not None else None
    shard = (rank, world) if aug_gen is None else (0, 1)  # augmented: the global batch, split after
    step = start
    while step < stop:
        epoch, first = divmod(step, spe)
        last = min(spe, first + stop - step)  # batches [first, last) of this epoch
        order = batch_order(cfg, seed, epoch, n, torch.device("cpu") if streamed else device)
        if streamed:
            mine = torch.cat([batch_indices(order, i, bs, rank, world) for i in range(first, last)])
            yield from data.train_batches(mine, bs // world, seed, epoch)
        else:
            for i in range(first, last):
                idx = batch_indices(order, i, bs, *shard)
                # index_select, not x[idx]: the same rows, 4x faster for a row gather on CPU (58 vs 13 us for 60 MNIST rows)
                x, y = data.train_x.index_select(0, idx), data.train_y.index_select(0, idx)
                if aug_gen is not None:
                    x = data.augment(x, aug_gen.manual_seed(seed * 1_000_003 + epoch * spe + i))
                    if world > 1:
                        x, y = (t.chunk(world)[rank] for t in (x, y))
                yield x, y
        step += last - first


def evaluate_split(task: Task, model: nn.Module, data: DataSplits | StreamSplits, split: str, batch_size: int,
                   precision: str = "fp32", nhwc: bool = False) -> dict[str, float]:
    """`task`'s metrics of `model` on `split` ("val" or "test") of `data`: resident tensors in slices
    of `batch_size`, or a stream's batches through the evaluation transform."""
    if isinstance(data, StreamSplits):
        return task.evaluate_batches(model, data.eval_batches(split, batch_size), precision, nhwc)
    return task.evaluate(model, getattr(data, f"{split}_x"), getattr(data, f"{split}_y"), batch_size, precision, nhwc)


def train(
    model: nn.Module,
    data: DataSplits | StreamSplits,
    masks: MaskSet,
    cfg: Any,
    *,
    seed: int,
    task: Task = TASKS.get("classification"),
    sparsifier: Sparsifier | None = None,
    phase: str = "train",
    state: TrainState | None = None,
    stop: int | None = None,
    snapshot_at: Collection[int] = (),
    checkpoint: Checkpoint | None = None,
    quiet: bool = False,
    channels_last: bool = False,
) -> TrainResult:
    """Train `model` on `data` for `cfg.duration` with the optimizer and LR schedule of `cfg`:

        with autocast(cfg.precision): loss = task.loss(forward(x), y)   # forward: model, or torch.compile(model)
        loss = loss + sparsifier.penalty(model, step)
        loss.backward()                         # fp16: scaler.scale(loss).backward(); scaler.unscale_(optimizer)
        if not sparsifier.before_step(model, step, masks, optimizer): optimizer.step()   # fp16: scaler.step
        sparsifier.after_step(model, step, masks, optimizer); masks re-applied

    Starts from `state` when given (resume or rewind) and stops at step `stop` (default: the end of
    the duration); captures a TrainState at each step in `snapshot_at`. Every `cfg.eval_every` and
    at the end it evaluates validation, and test where a result needs it: at a new minimum of the
    validation loss (the early-stop figure) and at the last step; other log rows leave test blank.
    A non-finite training loss or weight stops training with TrainingDiverged (checked at each
    evaluation, so the hot loop never waits on the device). With a `checkpoint`, everything the
    rest of the loop depends on is saved at evaluation steps at most every `checkpoint.every`, and a
    call that finds a checkpoint continues from it: the same bits as a call never stopped.

    `cfg.precision`, `cfg.compile` and `channels_last` (hardware.channels_last) choose how the step
    runs (train/accel.py); evaluation runs eagerly under the same precision and layout. With fp16 a
    step whose gradients overflow is skipped by the GradScaler and its loss left out of the running
    mean; only an evaluation window in which every step overflowed counts as divergence."""
    device = data.device
    precision, compile_step = getattr(cfg, "precision", "fp32"), bool(getattr(cfg, "compile", False))
    accel.check_precision(precision, device)
    if compile_step:
        accel.check_compile(device.type)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # in place: the same Parameter objects, NHWC strides
    me = distributed.ranks()  # one run over several processes: this rank trains its shard of every global batch
    # DDP (gradients averaged over the ranks) around the model, compiled on top; both share model's parameters (and so its masks)
    forward = distributed.data_parallel(model)
    forward = accel.compiled(forward) if compile_step else forward
    scaler = accel.grad_scaler(precision, device)
    bs = cfg.batch_size
    distributed.per_rank_batch(bs, me.world)  # the global batch must split evenly
    spe = steps_per_epoch(data, bs)
    total = to_steps(cfg.duration, spe)
    stop = total if stop is None else stop
    eval_every = max(1, to_steps(cfg.eval_every, spe))
    groups = sparsifier.param_groups(model) if sparsifier is not None else None
    optimizer = make_optimizer(model.parameters() if groups is None else groups, cfg)
    if scaler is not None:
        accel.skip_in_python(optimizer)
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # train.lr, or a group's own (before any state is loaded)
    factor = lr_factor(cfg, total, spe)
    start = 0
    resumed = checkpoint.saved() if checkpoint is not None else None
    if resumed is not None:  # a killed call of this segment got this far
        state = TrainState.from_dict(resumed["state"])
        masks.update_(MaskSet.from_state_dict(resumed["masks"]))
        if sparsifier is not None:
            sparsifier.load_state_dict(resumed["sparsifier"])
    if state is not None:
        model.load_state_dict(state.model)
        # a copy: the optimizer updates its state tensors in place, and a snapshot may be rewound to again
        optimizer.load_state_dict(copy.deepcopy(state.optimizer))
        accel.match_layout(optimizer)
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
        state.restore_rng()
        start = state.step
    reapply_masks = masks.binder(model, skip_dense=sparsifier is None)
    reapply_masks()
    result = TrainResult(steps=start)
    if start in snapshot_at:
        result.snapshots[start] = TrainState.capture(start, model, optimizer, scaler)
    running, seen = torch.zeros((), device=device), 0
    finite_steps = torch.zeros((), dtype=torch.int64, device=device)  # fp16: steps whose loss did not overflow
    skipped = torch.zeros((), device=device)  # fp16: steps the GradScaler skipped (a gradient inf/NaN)
    best_val_loss, best_val_acc, t0 = float("inf"), 0.0, time.perf_counter()
    progress = _progress(quiet, phase, stop - start)
    params = [p for p in model.parameters()]
    # Test is evaluated only where a result needs it: at the end, and at the minimum of validation
    # loss (the early-stop figure). Without a sparsifier the network is a function of its
    # state_dict alone, so the weights at each new minimum are kept (one copy, no evaluation) and
    # tested once at the end: the same numbers as testing at every new minimum, ~10 test passes
    # fewer per level. A sparsifier's forward may depend on its own state (a schedule's current
    # k, gates), so with one the test runs at each new minimum as it happens.
    defer_test = sparsifier is None
    best_row: int | None = None
    best_weights: dict[str, Tensor] | None = None
    every = to_steps(checkpoint.every, spe) if checkpoint is not None else 0
    last_checkpoint = start
    if resumed is not None:
        result = TrainResult.from_dict(resumed["result"])
        best_val_loss, best_val_acc, best_row, best_weights = (resumed["best"][k] for k in ("val_loss", "val_acc", "row", "weights"))
        best_weights = None if best_weights is None else {k: v.to(device) for k, v in best_weights.items()}
        t0 -= resumed["elapsed_s"]

    smoothing = float(getattr(cfg, "label_smoothing", 0.0))
    model.train()
    synced_bn = distributed.synced_batchnorm(model)
    # CUDA under DDP: BatchNorm statistics of the global batch while training (a no-op otherwise); entered and
    # left by hand so the loop keeps its indentation (an exception leaves SyncBatchNorm in place; the run has failed then)
    synced_bn.__enter__()
    for step, (x, y) in zip(range(start, stop), training_batches(data, cfg, seed, start, stop, me.rank, me.world)):
        if channels_last:
            x = accel.channels_last(x)
        f = factor(step)
        lr = cfg.lr * f
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * f  # = lr for every group at train.lr
        with accel.autocast(precision, device):  # fp32: no context, the step as before
            loss = task.loss(forward(x), y, smoothing)
        if sparsifier is not None and (penalty := sparsifier.penalty(model, step)) is not None:
            loss = loss + penalty
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
        else:  # fp16: backward of s * loss, then the gradients divided by s before anyone reads them
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            skipped.add_(sum(scaler._found_inf_per_device(optimizer).values()))  # 1.0 where this step will be skipped
        if sparsifier is None or not sparsifier.before_step(model, step, masks, optimizer):  # RigL's update replaces the step
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)  # skipped when a gradient is inf/NaN
        if scaler is not None:
            scaler.update()  # s halved after an overflow, doubled after growth_interval clean steps
        if sparsifier is not None:
            sparsifier.after_step(model, step, masks, optimizer)
        reapply_masks()
        if scaler is None:
            running.add_(loss.detach())
        else:  # an overflowed fp16 step was skipped, not taken: its loss stays out of the mean
            finite = torch.isfinite(loss.detach())
            running.add_(torch.where(finite, loss.detach(), 0.0))
            finite_steps.add_(finite)
        seen += 1

        done = step + 1
        if done in snapshot_at:
            result.snapshots[done] = TrainState.capture(done, model, optimizer, scaler)
        if done % eval_every == 0 or done == stop:
            distributed.mean_(running)  # the mean over the ranks' shards: the loss of the global batches
            taken = seen if scaler is None else int(finite_steps.item())
            train_loss = running.item() / taken if taken else math.nan  # fp16: every step of the window overflowed
            if not math.isfinite(train_loss) or not _finite(params):
                what = "a weight" if math.isfinite(train_loss) else (
                    "the training loss" if scaler is None or taken else f"the training loss of every one of the last {seen} fp16 steps")
                raise TrainingDiverged(phase, done, what)
            # evaluation on rank 0 over the whole split, its numbers handed to every rank (the 1-process records)
            val = distributed.on_leader(lambda: evaluate_split(task, model, data, "val", cfg.eval_batch_size, precision, channels_last))
            new_best = val["loss"] < best_val_loss
            test: dict[str, float] = {}
            if done == stop or (new_best and not defer_test):
                test = distributed.on_leader(lambda: evaluate_split(task, model, data, "test", cfg.eval_batch_size, precision, channels_last))
            if new_best:
                best_val_loss, result.best_step, best_row = val["loss"], done, len(result.log)
                if test:
                    result.test_acc_at_best = test["acc"]
                else:  # deferred: the weights are kept and tested once, if they are still the best at the end
                    best_weights = _keep(model, best_weights)
            best_val_acc = result.best_val_acc = max(best_val_acc, val["acc"])
            row = {**{f"val_{k}": v for k, v in val.items()}, **{f"test_{k}": test.get(k, float("nan")) for k in val}}
            result.log.append(dict(phase=phase, step=done, epoch=round(done / spe, 4), lr=lr, train_loss=train_loss, **row,
                                   **(sparsifier.log() if sparsifier is not None else {}),
                                   **({} if scaler is None else dict(loss_scale=scaler.get_scale(), skipped_steps=int(skipped.item()))),
                                   elapsed_s=round(time.perf_counter() - t0, 3)))
            result.val_loss, result.val_acc = val["loss"], val["acc"]
            if test:
                result.test_loss, result.test_acc = test["loss"], test["acc"]
            result.final = row
            running.zero_()
            finite_steps.zero_()
            skipped.zero_()
            seen = 0
            if every and done != stop and done - last_checkpoint >= every:
                checkpoint.write(dict(state=TrainState.capture(done, model, optimizer, scaler).to_dict(),
                                     masks=masks.state_dict(), sparsifier=sparsifier.state_dict() if sparsifier is not None else {},
                                     result=result.to_dict(), elapsed_s=time.perf_counter() - t0,
                                     best=dict(val_loss=best_val_loss, val_acc=best_val_acc, row=best_row, weights=best_weights)))
                last_checkpoint = done
            if progress is not None:
                progress.update(progress.task_ids[0], completed=done - start, description=f"{phase} val_acc={val['acc']:.4f}")
    synced_bn.__exit__(None, None, None)
    if best_weights is not None and best_row is not None and math.isnan(result.test_acc_at_best):  # the deferred test
        final_weights = _keep(model, None)
        model.load_state_dict(best_weights)
        test = distributed.on_leader(lambda: evaluate_split(task, model, data, "test", cfg.eval_batch_size, precision, channels_last))
        model.load_state_dict(final_weights)
        result.log[best_row].update({f"test_{k}": v for k, v in test.items()})
        result.test_acc_at_best = test["acc"]
    result.steps = stop
    if progress is not None:
        progress.stop()
    return result


def _keep(model: nn.Module, into: dict[str, Tensor] | None) -> dict[str, Tensor]:
    """A copy of `model`'s state_dict, written into the tensors of `into` when given (no allocation)."""
    state = model.state_dict()
    if into is None:
        return {k: v.detach().clone() for k, v in state.items()}
    with torch.no_grad():
        torch._foreach_copy_(list(into.values()), [state[k] for k in into])
    return into


def _finite(params: list[Tensor]) -> bool:
    """Whether every entry of every tensor is finite (one reduction per tensor, one sync)."""
    norms = torch._foreach_norm(params)
    return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())


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
