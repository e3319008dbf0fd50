"""What a schedule works with: the config, the resident data, and the moves every schedule makes
(build a model, train, score + select, evaluate, record a level, restore a finished level)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from pruneexp.data import DataSplits, StreamSplits
from pruneexp.models import load_weights, model_from_config
from pruneexp.pruning.masks import MaskSet, live_units, output_layer, prunable_weights, with_dense_rest
from pruneexp.pruning.step import prune_step
from pruneexp.train import TrainResult, epoch_order, evaluate_split, train
from pruneexp.train.checkpoint import Checkpoint, checkpoint_name
from pruneexp.train.task import TASKS, Task


@dataclass
class Level:
    """One sparsity level a schedule reached: the model and masks there, and its measurements."""

    level: int
    name: str
    model: nn.Module
    masks: MaskSet
    metrics: dict[str, Any]
    restored: bool = False  # read back from a previous (interrupted) run, not recomputed
    weights: bool = True  # `model` holds this level's weights (False: a level passed during training, masks only)
    flush: bool = True  # False: more levels follow at once, the runner writes its tables after the last of them


LevelLoader = Callable[[int], "dict[str, Any] | None"]


@dataclass
class FileStore:
    """Named artefacts kept beside a run (the rewind snapshot) or shared between runs (the masks of
    a lottery-ticket trajectory); the runner binds `load`/`save` to a directory. Unbound, nothing
    is kept."""

    load: Callable[[str], Any] = lambda name: None
    save: Callable[[str, Any], None] = lambda name, obj: None


@dataclass
class DenseCache:
    """Where a trained dense network is shared between runs that train it identically; the runner
    binds `load`/`save` to a directory keyed by the hash of the dense-training config."""

    load: Callable[[], "dict[str, Any] | None"] = lambda: None
    save: Callable[[dict[str, Any]], None] = lambda state: None


@dataclass
class RunContext:
    """What a schedule works with: the config, the resident data and its task, where artefacts are
    kept, and the moves every schedule makes. Orchestration only: the training step is
    `pruneexp.train.train`, the prune step `pruneexp.pruning.step.prune_step`."""

    cfg: Any  # the resolved run config (DictConfig)
    data: DataSplits | StreamSplits
    device: torch.device
    load_level: LevelLoader = lambda level: None
    dense_cache: DenseCache = field(default_factory=DenseCache)
    run_files: FileStore = field(default_factory=FileStore)
    ticket_files: FileStore = field(default_factory=FileStore)
    checkpoints: FileStore = field(default_factory=FileStore)  # mid-training checkpoints (hardware.checkpoint_every)
    quiet: bool = False
    train_log: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said once to the user by the runner

    @property
    def task(self) -> Task:
        return TASKS.get(self.data.task)

    # ---- building ----------------------------------------------------------------------------
    def build_model(self, seed: int | None = None) -> nn.Module:
        """The model of the config, its weights drawn after seeding with `seed` (default: run seed),
        then replaced by the trained weights of `model.weights` where it names a file."""
        torch.manual_seed(self.cfg.seed if seed is None else seed)
        model = model_from_config(self.cfg.model, self.data.input_shape, self.data.num_classes).to(self.device)
        return load_weights(model, self.cfg.model.weights) if self.cfg.model.get("weights") else model

    def prunable(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return prunable_weights(model, self.cfg.prune.layer_types, self.cfg.prune.exclude)

    def dense_masks(self, model: nn.Module) -> MaskSet:
        return MaskSet.dense(self.prunable(model))

    def with_live_units(self, level: Level) -> Level:
        """`level` with the architecture `shrink` leaves in its metrics, `live_units` (pruning.masks:
        "i-h1-h2-o" for a chain of layers, '' otherwise), over every layer of the prunable types, those
        `prune.exclude` leaves dense counted whole (e.g. an unpruned classifier). The methods that
        learn their sparsity while training (dst, gmp, movement) report it for their trained network;
        a level restored with it keeps its own."""
        if "live_units" not in level.metrics:
            chain = with_dense_rest(level.model, level.masks, self.cfg.prune.layer_types)
            level.metrics["live_units"] = live_units(level.model, chain)
        return level

    # ---- training ----------------------------------------------------------------------------
    @property
    def channels_last(self) -> bool:
        """hardware.channels_last: train (and evaluate) in NHWC memory order."""
        return bool(self.cfg.hardware.get("channels_last", False))

    def train_cfg(self, overrides: Any = None) -> Any:
        """The train config, with a phase's overrides (e.g. the fine-tuning duration and LR) on top."""
        if overrides is None:
            return self.cfg.train
        return OmegaConf.merge(self.cfg.train, OmegaConf.to_container(overrides, resolve=True))

    def train(self, model: nn.Module, masks: MaskSet, cfg: Any, phase: str, level: int, **kwargs: Any) -> TrainResult:
        """`pruneexp.train.train` with the run's data, task and seed; its log rows join the run's.
        With `hardware.checkpoint_every` set, the segment checkpoints into the run directory and a
        killed run continues from its last checkpoint."""
        every = self.cfg.hardware.get("checkpoint_every")
        if every and "checkpoint" not in kwargs:
            state = kwargs.get("state")
            name = checkpoint_name(phase, level, 0 if state is None else state.step, kwargs.get("stop"))
            kwargs["checkpoint"] = Checkpoint(str(every), name, self.checkpoints.load, self.checkpoints.save)
        result = train(model, self.data, masks, cfg, seed=self.cfg.seed, task=self.task, phase=phase, quiet=self.quiet,
                       channels_last=self.channels_last, **kwargs)
        self.train_log.extend({"level": level, **row} for row in result.log)
        return result

    def train_dense(self, model: nn.Module, masks: MaskSet, snapshot_at: Collection[int] = ()) -> TrainResult:
        """Train the dense network with `train`, or load it (with its log and the snapshots asked
        for) from the dense cache when an identical dense training was done before."""
        cached = self.dense_cache.load()
        if cached is not None:
            result = TrainResult.from_dict(cached["result"])
            if set(snapshot_at) <= set(result.snapshots):
                model.load_state_dict(cached["model"])
                self.train_log.extend(cached["log"])
                return result
        result = self.train(model, masks, self.train_cfg(), "dense", 0, snapshot_at=snapshot_at)
        self.dense_cache.save(dict(model={k: v.detach().cpu() for k, v in model.state_dict().items()},
                                   log=[r for r in self.train_log if r["phase"] == "dense"], result=result.to_dict()))
        return result

    # ---- pruning -----------------------------------------------------------------------------
    def scoring_batches(self) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
        """The criterion's batches: the first `criterion.batches` batches of a permutation of the
        training split seeded by the run seed (the same batches every call), unaugmented (streamed
        images through the evaluation transform, read by the stream's workers). The permutation is
        drawn on the first call (from its own generator), so a criterion that reads no data
        (magnitude, at every update of gmp) does not pay for it."""
        c, d = self.cfg.criterion, self.data
        drawn: list[Tensor] = []

        def batches() -> Iterator[tuple[Tensor, Tensor]]:
            if not drawn:
                drawn.append(epoch_order(self.cfg.seed, -1, len(d.train_y), d.device))
            order = drawn[0]
            if isinstance(d, StreamSplits):
                yield from d.batches("train", order[: c.batches * c.batch_size], c.batch_size)
                return
            for i in range(c.batches):
                idx = order[i * c.batch_size : (i + 1) * c.batch_size]
                if len(idx):
                    yield d.train_x[idx], d.train_y[idx]

        return batches

    def prune(self, model: nn.Module, masks: MaskSet, sparsity: float,
              layer_sparsity: dict[str, float] | None = None) -> MaskSet:
        """The prune step (score, select, footprint, update, apply) with the run's criterion,
        selector settings, scoring batches and task loss. At channel granularity the output layer
        keeps all its outputs."""
        frozen = self.channel_frozen(model) if self.cfg.prune.granularity == "channel" else ()
        return prune_step(model, self.prunable(model), masks, sparsity, criterion=self.cfg.criterion, prune=self.cfg.prune,
                          batches=self.scoring_batches(), loss_fn=self.task.loss, seed=self.cfg.seed, frozen=frozen,
                          layer_sparsity=layer_sparsity)

    def channel_frozen(self, model: nn.Module) -> tuple[str, ...]:
        """Layers that channel pruning leaves whole: the output layer, whose outputs are the classes."""
        out = output_layer(model, self.data.num_classes, self.cfg.prune.layer_types)
        frozen = (out,) if out is not None and out in self.prunable(model) else ()
        note = f"note: channel pruning never removes classifier outputs: {frozen[0]} keeps all its units." if frozen else ""
        if note and note not in self.notes:
            self.notes.append(note)
            if not self.quiet:
                print(note)
        return frozen

    # ---- levels ------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation and test metrics of `model` (val_loss, val_acc, test_loss, test_acc, ...)."""
        bs, precision = self.cfg.train.eval_batch_size, self.cfg.train.get("precision", "fp32")
        val = evaluate_split(self.task, model, self.data, "val", bs, precision, self.channels_last)
        test = evaluate_split(self.task, model, self.data, "test", bs, precision, self.channels_last)
        return {**{f"val_{k}": v for k, v in val.items()}, **{f"test_{k}": v for k, v in test.items()}}

    def finished(self, level: int) -> bool:
        """Whether an earlier invocation of this run finished `level` (and kept its weights)."""
        saved = self.load_level(level)
        return saved is not None and "model" in saved

    def level(self, level: int, name: str, model: nn.Module, masks: MaskSet,
              work: Callable[[], tuple[MaskSet, TrainResult | None]]) -> Level:
        """Level `level`: restored from disk if a previous run finished it (weights and masks
        loaded into `model`), otherwise computed by `work()`, which returns the level's masks and
        the training result if it trained. Metrics are read on validation and test (from the
        training's last evaluation when it trained: the same model, so not evaluated twice)."""
        saved = self.load_level(level)
        if saved is not None and "model" in saved:
            model.load_state_dict(saved["model"])
            return Level(level, name, model, MaskSet.from_state_dict(saved["masks"]).to(self.device), saved["metrics"], restored=True)
        masks, trained = work()
        metrics = dict(trained.final) if trained is not None and trained.final else self.evaluate(model)
        if trained is not None:
            # no validation split (dataset.val_size=0): no early stop, so NaN (left blank in reports), not the loop's -1
            metrics.update(train_steps=trained.steps, best_val_acc=trained.best_val_acc,
                           best_step=trained.best_step if trained.best_step >= 0 else math.nan,
                           test_acc_at_best=trained.test_acc_at_best)
        metrics.update(self.data.meta)  # the data's protocol (tokens: nsamples, seqlen, the text's hash) beside its numbers
        if self.data.floor is not None:  # markov: every loss read against the exact entropy per token
            metrics.update(entropy_floor=self.data.floor, val_gap=metrics["val_loss"] - self.data.floor,
                           test_gap=metrics["test_loss"] - self.data.floor)
        return Level(level, name, model, masks, metrics)
