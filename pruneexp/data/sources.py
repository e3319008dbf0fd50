"""The registered loaders: `fn(cfg) -> RawData` on CPU. Nothing here iterates samples."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import io
import json
import os
import random
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pruneexp.data.core import DATASETS, RawData
from pruneexp.errors import PruneexpError
from pruneexp.io import save_torch


def _abspath(p: Any) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(p))))


# ---------------------------------------------------------------------------------------------
# digits: sklearn's bundled 8x8 digits (1797 images, values 0..16)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    # Fast path: read the CSV that sklearn.datasets.load_digits reads, without importing
    # sklearn.datasets (~1.5 s of imports); falls back to load_digits if the file moved.
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1], data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target.astype(np.int64)


@DATASETS.register("digits", shape=(1, 8, 8), classes=10, size="1,797 images, no official test split (test_size held out)")
def load_digits(cfg: Any) -> RawData:
    data, target = _digits_arrays()
    x = torch.from_numpy(data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(target)
    return RawData(x, y, None, None, 10, (1, 8, 8))


# ---------------------------------------------------------------------------------------------
# mnist1d: generated locally (never downloaded), cached under cfg.cache_dir


def _mnist1d_generate(args: Any) -> dict[str, torch.Tensor]:
    from mnist1d.data import make_dataset

    # make_dataset reseeds the global `random` and numpy RNGs; leave them as they were.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x": torch.from_numpy(np.asarray(d["x"], dtype=np.float32)),
        "y": torch.from_numpy(np.asarray(d["y"], dtype=np.int64)),
        "x_test": torch.from_numpy(np.asarray(d["x_test"], dtype=np.float32)),
        "y_test": torch.from_numpy(np.asarray(d["y_test"], dtype=np.int64)),
    }


def _mnist1d_args() -> tuple[Any, str]:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    spec = {k: v for k, v in vars(args).items() if k != "url"}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return args, digest


def mnist1d_cache_file(cfg: Any) -> Path:
    """Where the generated MNIST-1D tensors are cached for this version of the generation args."""
    _, digest = _mnist1d_args()
    return _abspath(cfg.cache_dir) / f"mnist1d-{digest}.pt"


@DATASETS.register("mnist1d", shape=(40,), classes=10, size="4,000 train / 1,000 test, generated locally (Greydanus 2020)")
def load_mnist1d(cfg: Any) -> RawData:
    args, digest = _mnist1d_args()
    cache_dir = _abspath(cfg.cache_dir)
    path = cache_dir / f"mnist1d-{digest}.pt"
    d = None
    if path.is_file():
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # corrupt or foreign file: regenerate and overwrite it
            d = None
    if d is None:
        d = _mnist1d_generate(args)
        try:
            save_torch(d, path)
        except OSError:
            pass  # an unwritable cache only costs regeneration next time
    return RawData(d["x"], d["y"], d["x_test"], d["y_test"], 10, (40,))


# ---------------------------------------------------------------------------------------------
# synthetic: seeded Gaussian inputs labelled by a fixed random linear teacher


@DATASETS.register("synthetic", shape="dataset.shape (default [1, 8, 8])", classes="dataset.num_classes (default 10)", size="dataset.train_size + val_size + test_size, generated")
def load_synthetic(cfg: Any) -> RawData:
    """cfg.train_size + cfg.val_size + cfg.test_size examples of shape cfg.shape, so that the
    training split has exactly cfg.train_size. Labels = argmax of a random linear map of the
    input (seeded by split_seed): linearly separable, so accuracy rises within a few steps."""
    shape = tuple(int(s) for s in cfg.shape)
    k = int(cfg.num_classes)
    n = int(cfg.train_size) + int(cfg.val_size) + int(cfg.test_size)
    if not shape or min(shape) < 1 or k < 2 or int(cfg.train_size) < 1:
        raise PruneexpError(
            f"synthetic dataset needs a non-empty dataset.shape, dataset.num_classes >= 2 and "
            f"dataset.train_size >= 1 (got shape={list(shape)}, num_classes={k}, train_size={cfg.train_size})."
        )
    gen = torch.Generator().manual_seed(int(cfg.split_seed) + 7919)
    dim = int(np.prod(shape))
    teacher = torch.randn(dim, k, generator=gen)
    x = torch.randn(n, *shape, generator=gen)
    y = (x.reshape(n, dim) @ teacher).argmax(dim=1)
    return RawData(x, y, None, None, k, shape)


# ---------------------------------------------------------------------------------------------
# torchvision datasets: read from cfg.root (read only), download only into an empty place

_DOWNLOAD_TIMEOUT_S = 10.0


def _missing_message(name: str, root: Path, folder: str, reason: str) -> str:
    return (
        f"Dataset '{name}' was not found under {root} (torchvision looks for {root / folder}). "
        f"{reason} Fix: set PRUNEEXP_DATA=/path/to/data or pass dataset.root=/path/to/data "
        f"(the folder that holds {folder})."
    )


def _has_files(folder: Path) -> bool:
    return folder.exists() and any(p.is_file() for p in folder.rglob("*"))


def _try_download(cls: type, root: Path, kwargs: dict) -> str | None:
    """Call torchvision's download into `root`; return None on success or the reason it failed.

    Only called when nothing of the dataset exists under root. A short socket timeout keeps a
    network that drops packets from hanging the run; whatever a failed attempt created under
    root (folders, partial archives) is removed again.
    """
    top = root  # the highest folder of root's path that does not exist yet (removed on failure)
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    before = set(os.listdir(root)) if root.is_dir() else None
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            cls(str(root), download=True, **kwargs)
        return None
    except BaseException as e:  # noqa: BLE001 - every failure becomes one PruneexpError
        if isinstance(e, KeyboardInterrupt):
            raise
        reason = " ".join(str(e).split()) or type(e).__name__
        if len(reason) > 300:
            reason = reason[:300] + "..."
        # undo what the failed attempt wrote
        if before is None:
            shutil.rmtree(top, ignore_errors=True)
        elif root.is_dir():
            for entry in set(os.listdir(root)) - before:
                p = root / entry
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        p.unlink()
        return reason
    finally:
        socket.setdefaulttimeout(old_timeout)


def _torchvision_raw(name: str, cfg: Any, cls: type, folder: str, kwargs: dict | None = None):
    kwargs = kwargs or {}
    root = _abspath(cfg.root)

    def read() -> tuple[Any, Any]:
        return cls(str(root), train=True, download=False, **kwargs), cls(str(root), train=False, download=False, **kwargs)

    try:
        return read()
    except Exception as e:  # noqa: BLE001 - missing or unreadable files, reported below
        first_error = " ".join(str(e).split())
    archive = getattr(cls, "filename", None)  # CIFAR's tar.gz sits in root itself
    if _has_files(root / folder) or (archive and (root / archive).exists()):
        # Something is there but torchvision rejects it: never download over existing data.
        raise PruneexpError(
            _missing_message(
                name, root, folder,
                f"Files exist in {root / folder if _has_files(root / folder) else root / archive} but "
                f"torchvision could not read them ({first_error}); "
                f"they were left untouched (no download over existing data).",
            )
        )
    if not cfg.download:
        raise PruneexpError(_missing_message(name, root, folder, "Download is off (dataset.download=false)."))
    reason = _try_download(cls, root, kwargs)
    if reason is None:
        try:
            return read()
        except Exception as e:  # noqa: BLE001
            reason = " ".join(str(e).split())
    raise PruneexpError(
        _missing_message(name, root, folder, f"Downloading it failed ({reason}); this machine may have no network.")
    )


def _images(data: Any) -> torch.Tensor:
    t = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(data))
    if t.dim() == 3:  # (N, H, W) grayscale
        t = t.unsqueeze(1)
    else:  # (N, H, W, C) numpy HWC (CIFAR)
        t = t.permute(0, 3, 1, 2)
    return t.to(torch.float32).div_(255.0).contiguous()


def _labels(targets: Any) -> torch.Tensor:
    return torch.as_tensor(targets, dtype=torch.int64)


def _register_torchvision(name: str, cls_name: str, folder: str, num_classes: int, shape: tuple[int, ...], size: str) -> None:
    def loader(cfg: Any) -> RawData:
        import torchvision.datasets as tvd

        train, test = _torchvision_raw(name, cfg, getattr(tvd, cls_name), folder)
        return RawData(
            _images(train.data), _labels(train.targets), _images(test.data), _labels(test.targets), num_classes, shape
        )

    loader.__name__ = f"load_{name}"
    loader.__doc__ = f"torchvision.datasets.{cls_name} from <cfg.root>/{folder} (read only)."
    DATASETS.register(name, shape=shape, classes=num_classes, size=size)(loader)


_register_torchvision("mnist", "MNIST", "MNIST/raw", 10, (1, 28, 28), "60,000 train / 10,000 test")
_register_torchvision("fashion_mnist", "FashionMNIST", "FashionMNIST/raw", 10, (1, 28, 28), "60,000 train / 10,000 test")
# CIFAR-10/100 are read from their python batches (cifar-10-batches-py/data_batch_1..5, test_batch,
# batches.meta; cifar-100-python/train, test, meta) by torchvision.datasets.CIFAR10/100, which
# unpickles them with plain pickle (they hold numpy arrays; weights_only does not apply). Unpickling
# a file runs what it names, so a file we did not write is a risk in principle; torchvision checks
# every file's md5 against the official archive's before it unpickles any (a changed file is refused:
# "could not read them" below), so only the files the CIFAR authors published are unpickled.
# tests/test_data.py reads stand-ins written in the files' exact format (Python 2 pickles).
_register_torchvision("cifar10", "CIFAR10", "cifar-10-batches-py", 10, (3, 32, 32), "50,000 train / 10,000 test")
_register_torchvision("cifar100", "CIFAR100", "cifar-100-python", 100, (3, 32, 32), "50,000 train / 10,000 test")
