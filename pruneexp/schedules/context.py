"""What a schedule works with: the config, the resident data, and the moves every schedule makes
(build a model, train, score + select, evaluate, record a level, restore a finished level)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from pruneexp.data import DataSplits
from pruneexp.models import create_model
from pruneexp.pruning.channels import with_channel_footprint
from pruneexp.pruning.criteria import ScoreContext, score
from pruneexp.pruning.groups import Granularity
from pruneexp.pruning.masks import MaskSet, layer_weights, prunable_weights
from pruneexp.pruning.select import select
from pruneexp.train import TrainResult, epoch_order, evaluate, train


@dataclass
class Level:
    """One sparsity level a schedule reached: the model and masks there, and its measurements."""

    level: int
    name: str
    model: nn.Module
    masks: MaskSet
    metrics: dict[str, Any]
    restored: bool = False  # read back from a previous (interrupted) run, not recomputed


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
    cfg: Any  # the resolved run config (DictConfig)
    data: DataSplits
    device: torch.device
    load_level: LevelLoader = lambda level: None
    dense_cache: DenseCache = field(default_factory=DenseCache)
    run_files: FileStore = field(default_factory=FileStore)
    ticket_files: FileStore = field(default_factory=FileStore)
    quiet: bool = False
    train_log: list[dict[str, Any]] = field(default_factory=list)

    # ---- building ----------------------------------------------------------------------------
    def build_model(self, seed: int | None = None) -> nn.Module:
        """The model of the config, its weights drawn after seeding with `seed` (default: run seed)."""
        m = self.cfg.model
        torch.manual_seed(self.cfg.seed if seed is None else seed)
        model = create_model(m.name, self.data.input_shape, self.data.num_classes, source=m.source,
                             widths=None if m.widths is None else list(m.widths), init=m.init)
        return model.to(self.device)

    def prunable(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return prunable_weights(model, self.cfg.prune.layer_types, self.cfg.prune.exclude)

    def dense_masks(self, model: nn.Module) -> MaskSet:
        return MaskSet.dense(self.prunable(model))

    # ---- training ----------------------------------------------------------------------------
    def train_cfg(self, overrides: Any = None) -> Any:
        """The train config, with a phase's overrides (e.g. the fine-tuning duration and LR) on top."""
        if overrides is None:
            return self.cfg.train
        return OmegaConf.merge(self.cfg.train, OmegaConf.to_container(overrides, resolve=True))

    def train(self, model: nn.Module, masks: MaskSet, cfg: Any, phase: str, level: int, **kwargs: Any) -> TrainResult:
        result = train(model, self.data, masks, cfg, seed=self.cfg.seed, phase=phase, quiet=self.quiet, **kwargs)
        self.train_log.extend({"level": level, **row} for row in result.log)
        return result

    def train_dense(self, model: nn.Module, masks: MaskSet, snapshot_at: Collection[int] = ()) -> TrainResult:
        """Train the dense network with `train`, or load it (with its log and the snapshots asked
        for) from the dense cache when an identical dense training was done before."""
        cached = self.dense_cache.load()
        if cached is not None and set(snapshot_at) <= set(cached["result"].snapshots):
            model.load_state_dict(cached["model"])
            self.train_log.extend(cached["log"])
            return cached["result"]
        result = self.train(model, masks, self.train_cfg(), "dense", 0, snapshot_at=snapshot_at)
        self.dense_cache.save(dict(model={k: v.detach().cpu() for k, v in model.state_dict().items()},
                                   log=[r for r in self.train_log if r["phase"] == "dense"], result=result))
        return result

    # ---- pruning -----------------------------------------------------------------------------
    def scoring_batches(self) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
        """The criterion's batches: the first `criterion.batches` batches of a permutation of the
        training split seeded by the run seed (the same batches every call)."""
        c, d = self.cfg.criterion, self.data
        order = epoch_order(self.cfg.seed, -1, len(d.train_x), d.train_x.device)

        def batches() -> Iterator[tuple[Tensor, Tensor]]:
            for i in range(c.batches):
                idx = order[i * c.batch_size : (i + 1) * c.batch_size]
                if len(idx):
                    yield d.train_x[idx], d.train_y[idx]

        return batches

    def prune(self, model: nn.Module, masks: MaskSet, sparsity: float,
              layer_sparsity: dict[str, float] | None = None) -> MaskSet:
        """Score with the configured criterion, select to `sparsity` (or to explicit per-layer
        targets under layerwise scope), apply the criterion's weight update if it has one (obs),
        then the new masks. At channel granularity the classifier (the last layer) keeps all its
        outputs, and each pruned unit's bias and BatchNorm are masked too."""
        p = self.cfg.prune
        gran = Granularity.from_cfg(p)
        params = self.prunable(model)
        frozen = self.channel_frozen(model) if gran.kind == "channel" else ()
        ctx = ScoreContext(model=model, params={n: w for n, w in params.items() if n not in frozen}, masks=masks,
                           batches=self.scoring_batches(), loss_fn=F.cross_entropy, cfg=self.cfg.criterion,
                           seed=self.cfg.seed, granularity=gran)
        scored = score(self.cfg.criterion.name, ctx)
        new = select(scored.scores, sparsity, masks, scope=p.scope, granularity=gran, layer_rates=dict(p.layer_rates),
                     group_reduce=p.group_reduce, frozen=frozen, layer_sparsity=layer_sparsity)
        if gran.kind == "channel":
            new = with_channel_footprint(model, new)
        if scored.update is not None:
            scored.update(model, new)
        new.apply_(model)
        return new

    def channel_frozen(self, model: nn.Module) -> tuple[str, ...]:
        """Layers that channel pruning leaves whole: the classifier, whose outputs are the classes."""
        last = list(layer_weights(model, self.cfg.prune.layer_types))[-1:]
        frozen = tuple(n for n in last if n in self.prunable(model))
        if frozen and not self.quiet and not getattr(self, "_told_frozen", False):
            print(f"note: channel pruning never removes classifier outputs: {frozen[0]} keeps all its units.")
            self._told_frozen = True
        return frozen

    # ---- levels ------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        bs = self.cfg.train.eval_batch_size
        val_loss, val_acc = evaluate(model, self.data.val_x, self.data.val_y, bs)
        test_loss, test_acc = evaluate(model, self.data.test_x, self.data.test_y, bs)
        return dict(val_loss=val_loss, val_acc=val_acc, test_loss=test_loss, test_acc=test_acc)

    def finished(self, level: int) -> bool:
        """Whether an earlier invocation of this run finished `level` (and kept its weights)."""
        saved = self.load_level(level)
        return saved is not None and "model" in saved

    def level(self, level: int, name: str, model: nn.Module, masks: MaskSet,
              work: Callable[[], tuple[MaskSet, TrainResult | None]]) -> Level:
        """Level `level`: restored from disk if a previous run finished it (weights and masks
        loaded into `model`), otherwise computed by `work()`, which returns the level's masks and
        the training result if it trained. Metrics are read on validation and test."""
        saved = self.load_level(level)
        if saved is not None and "model" in saved:
            model.load_state_dict(saved["model"])
            return Level(level, name, model, MaskSet.from_state_dict(saved["masks"]).to(self.device), saved["metrics"], restored=True)
        masks, trained = work()
        metrics = self.evaluate(model)
        if trained is not None:
            metrics.update(train_steps=trained.steps, best_val_acc=trained.best_val_acc, best_step=trained.best_step,
                           test_acc_at_best=trained.test_acc_at_best)
        return Level(level, name, model, masks, metrics)
