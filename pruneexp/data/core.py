"""Registry, containers and `load_data`: raw CPU tensors -> seeded splits -> normalized, on device."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from omegaconf import OmegaConf
from torch import Tensor

from pruneexp.errors import PruneexpError
from pruneexp.registry import Registry

from pruneexp.data.augment import CropFlip

# name -> loader `fn(cfg) -> RawData` (CPU tensors). Registered in pruneexp.data.sources.
DATASETS: Registry[Callable[[Any], "RawData"]] = Registry("dataset")


@dataclass
class RawData:
    """What a registered loader returns, on CPU: x float32 in [0, 1] (or already standardized,
    mnist1d), y int64. test_x/test_y are None for datasets with no official test split."""

    train_x: Tensor
    train_y: Tensor
    test_x: Optional[Tensor]
    test_y: Optional[Tensor]
    num_classes: int
    input_shape: tuple[int, ...]
    # language_model: x are token ids (N, T) int64, y the next tokens; integer x (token ids, also of a
    # classification task: text_classification) are never normalized
    task: str = "classification"
    val_x: Optional[Tensor] = None  # a validation split of the loader's own (text: by position); None: held out at random
    val_y: Optional[Tensor] = None
    floor: Optional[float] = None  # the best loss any model can reach (markov: the exact entropy per token, nats)
    meta: dict = dataclasses.field(default_factory=dict)  # recorded beside every level's metrics (tokens: nsamples, seqlen, text hash)
    source: str = ""  # how the loader read its data, said once to the user


@dataclass
class DataSplits:
    """Train / validation / test tensors resident on the run's device.

    x: float32, normalized by the training split's per-channel mean/std (when cfg.normalize);
    y: int64. input_shape has no batch dimension. `augment(batch_x, generator)` (or None) is
    applied by the trainer to each training batch; the generator lives on the data's device.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    augment: Optional[Callable[[Tensor, torch.Generator], Tensor]] = None
    task: str = "classification"  # pruneexp.train.task.TASKS: the loss and metrics these targets take
    floor: Optional[float] = None  # the lowest loss reachable (markov's entropy per token), for the gap in levels.csv
    meta: dict = dataclasses.field(default_factory=dict)  # the loader's protocol, recorded in every levels.csv row


def _split_generator(seed: int) -> torch.Generator:
    # Always a CPU generator: the split is the same whatever the run's device or seed.
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _hold_out(n: int, k: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Indices (held, rest) with |held| = k drawn at random; both sorted (original order kept)."""
    perm = torch.randperm(n, generator=gen)
    return perm[:k].sort().values, perm[k:].sort().values


def _channel_dims(x: Tensor) -> tuple[int, ...]:
    # (N, C, ...) -> reduce over all but dim 1; (N, D) (e.g. MNIST-1D) is one channel.
    return tuple(d for d in range(x.dim()) if d != 1) if x.dim() >= 3 else tuple(range(x.dim()))


def normalize_stats(train_x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and (population) std of `train_x`, shaped to broadcast against a batch."""
    dims = _channel_dims(train_x)
    mean = train_x.mean(dim=dims, keepdim=True)
    std = train_x.std(dim=dims, keepdim=True, correction=0).clamp_min(1e-8)
    return mean, std


def load_data(cfg: Any, device: str | torch.device) -> DataSplits:
    """Load the dataset named by cfg.name once, split it by cfg.split_seed, normalize, move to device.

    Datasets without an official test split first hold out cfg.test_size examples as test; then
    cfg.val_size training examples are held out as validation (same seeded generator, so the
    split is fixed across run seeds). cfg.test_size is ignored for datasets that have a test split.
    """
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = OmegaConf.structured(cfg)  # resolves the ${oc.env:...} defaults of root / cache_dir
    name = str(cfg.name)
    loader = DATASETS.get(name)
    raw = loader(cfg)
    val_size, test_size = int(cfg.val_size), int(cfg.test_size)
    if val_size < 0 or test_size < 0:
        raise PruneexpError(f"dataset.val_size and dataset.test_size must be >= 0 (got {val_size}, {test_size}).")

    x, y = raw.train_x, raw.train_y
    gen = _split_generator(cfg.split_seed)
    if raw.test_x is None:
        if test_size <= 0:
            raise PruneexpError(
                f"Dataset '{name}' has no official test split, so dataset.test_size must be > 0 "
                f"(examples held out of its {len(y)} examples as test by dataset.split_seed)."
            )
        if test_size + val_size >= len(y):
            raise PruneexpError(
                f"Dataset '{name}' has {len(y)} examples, too few for dataset.test_size={test_size} plus "
                f"dataset.val_size={val_size} with any left to train on; lower them."
            )
        test_idx, rest = _hold_out(len(y), test_size, gen)
        test_x, test_y = x[test_idx], y[test_idx]
        x, y = x[rest], y[rest]
    else:
        test_x, test_y = raw.test_x, raw.test_y
    if raw.val_x is not None:  # the loader split by position (text): its validation split as it is
        val_x, val_y, train_x, train_y = raw.val_x, raw.val_y, x, y
    elif val_size >= len(y):
        raise PruneexpError(
            f"dataset.val_size={val_size} is not smaller than the {len(y)} training examples of "
            f"dataset '{name}'; lower dataset.val_size."
        )
    else:
        val_idx, train_idx = _hold_out(len(y), val_size, gen)
        val_x, val_y = x[val_idx], y[val_idx]
        train_x, train_y = x[train_idx], y[train_idx]

    dev = torch.device(device)
    parts = [t.to(dev, non_blocking=False) for t in (train_x, val_x, test_x)]
    tokens = raw.task == "language_model" or not raw.train_x.is_floating_point()  # token ids stay integers, never normalized
    parts = [t.long() if tokens else t.float() if t.dtype != torch.float32 else t for t in parts]
    labels = [t.to(dev).long() for t in (train_y, val_y, test_y)]
    if cfg.normalize and not tokens:
        mean, std = normalize_stats(parts[0])
        # In place: every tensor here is a fresh copy (index gathers / dtype casts) or the
        # loader's own freshly built test tensor; loaders must not hand out cached tensors.
        parts = [t.sub_(mean).div_(std) for t in parts]

    augment = None
    if cfg.augment:
        shape = tuple(raw.input_shape)
        if len(shape) != 3 or min(shape[1:]) <= 4:
            raise PruneexpError(
                f"dataset.augment=true needs image inputs (C, H, W) larger than 4x4; dataset '{name}' "
                f"has input shape {shape}. Set dataset.augment=false."
            )
        augment = CropFlip(pad=4)

    return DataSplits(
        name=name,
        train_x=parts[0].contiguous(),
        train_y=labels[0],
        val_x=parts[1].contiguous(),
        val_y=labels[1],
        test_x=parts[2].contiguous(),
        test_y=labels[2],
        num_classes=int(raw.num_classes),
        input_shape=tuple(int(s) for s in raw.input_shape),
        augment=augment,
        task=raw.task,
        floor=raw.floor,
        meta=dict(raw.meta),
    )
