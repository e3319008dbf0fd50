"""Tests of pruneexp.data: splits, normalization, caching, torchvision readers, augmentation.

Fast and offline: MNIST / CIFAR-10 are faked in tmp_path in their real on-disk formats; the real
MNIST is read from the shared folder when present (skipped otherwise).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pruneexp.config import DatasetConfig
from pruneexp.data import DATASETS, CropFlip, DataSplits, crop_flip, load_data, mnist1d_cache_file, random_crop_flip
from pruneexp.errors import PruneexpError

REPO = Path(__file__).resolve().parents[1]
ALL = ["digits", "mnist1d", "mnist", "fashion_mnist", "cifar10", "cifar100", "synthetic", "markov", "text", "tokens", "text_classification"]


def make_cfg(name: str, /, **over):
    """The DictConfig Hydra would build: schema defaults <- conf/dataset/<name>.yaml <- overrides."""
    return OmegaConf.merge(
        OmegaConf.structured(DatasetConfig),
        OmegaConf.load(REPO / "conf" / "dataset" / f"{name}.yaml"),
        over,
    )


def row_hashes(x: torch.Tensor) -> set[str]:
    a = x.detach().cpu().contiguous().numpy()
    return {hashlib.sha1(r.tobytes()).hexdigest() for r in a.reshape(len(a), -1)}


def assert_normalized(x: torch.Tensor) -> None:
    dims = [d for d in range(x.dim()) if d != 1] if x.dim() >= 3 else list(range(x.dim()))
    assert torch.allclose(x.mean(dim=dims), torch.zeros(1), atol=1e-4)
    assert torch.allclose(x.std(dim=dims, correction=0), torch.ones(1), atol=1e-3)


def assert_splits(s: DataSplits, n_train: int, n_val: int, n_test: int, shape: tuple, classes: int) -> None:
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (n_train, n_val, n_test)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (n_train, n_val, n_test)
    assert s.input_shape == shape and s.num_classes == classes
    for x in (s.train_x, s.val_x, s.test_x):
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == shape
    for y in (s.train_y, s.val_y, s.test_y):
        assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < classes


# --------------------------------------------------------------------------------------------
# registry and configs


def test_registry_and_conf_files():
    assert sorted(DATASETS.names()) == sorted(ALL)
    for name in ALL:
        cfg = make_cfg(name)  # every yaml validates against the DatasetConfig schema
        assert cfg.name == name
        raw_yaml = OmegaConf.load(REPO / "conf" / "dataset" / f"{name}.yaml")
        defaults = OmegaConf.structured(DatasetConfig)
        for key in raw_yaml:  # only fields that differ from the defaults (val_size always stated)
            assert key in ("name", "val_size") or raw_yaml[key] != defaults[key], (name, key)
        assert "val_size" in raw_yaml
    assert make_cfg("cifar10").augment and make_cfg("cifar100").augment
    with pytest.raises(PruneexpError, match="Did you mean 'mnist'"):
        load_data(make_cfg("digits", name="mnsit"), "cpu")


# --------------------------------------------------------------------------------------------
# digits


def test_digits_splits_exact_deterministic_disjoint_normalized():
    t0 = time.perf_counter()
    s = load_data(make_cfg("digits"), "cpu")
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, f"digits took {elapsed:.2f}s"
    assert_splits(s, 1797 - 360 - 300, 300, 360, (1, 8, 8), 10)
    assert s.name == "digits" and s.augment is None
    assert set(s.train_y.tolist()) == set(range(10))
    assert_normalized(s.train_x)

    again = load_data(make_cfg("digits"), "cpu")
    for a, b in [(s.train_x, again.train_x), (s.val_x, again.val_x), (s.test_x, again.test_x),
                 (s.train_y, again.train_y), (s.val_y, again.val_y), (s.test_y, again.test_y)]:
        assert torch.equal(a, b)

    # disjoint: compare un-normalized rows so duplicates of the raw data set are accounted for
    raw = load_data(make_cfg("digits", normalize=False), "cpu")
    tr, va, te = row_hashes(raw.train_x), row_hashes(raw.val_x), row_hashes(raw.test_x)
    all_rows = row_hashes(DATASETS.get("digits")(make_cfg("digits")).train_x)
    assert len(tr) + len(va) + len(te) == len(all_rows)  # no row in two splits, none lost
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert float(raw.train_x.min()) >= 0.0 and float(raw.train_x.max()) <= 1.0

    other = load_data(make_cfg("digits", split_seed=1), "cpu")
    assert not torch.equal(other.val_y, s.val_y)  # a different split_seed gives a different split


def test_digits_matches_sklearn_and_dataclass_cfg():
    from sklearn.datasets import load_digits as sk_load_digits

    sk = sk_load_digits()
    raw = DATASETS.get("digits")(make_cfg("digits"))
    assert torch.equal(raw.train_x.reshape(-1, 64), torch.tensor(sk.data / 16.0, dtype=torch.float32))
    assert torch.equal(raw.train_y, torch.tensor(sk.target, dtype=torch.int64))
    # a plain DatasetConfig works like the DictConfig
    s = load_data(DatasetConfig(name="digits", val_size=300, test_size=360), torch.device("cpu"))
    assert torch.equal(s.val_x, load_data(make_cfg("digits"), "cpu").val_x)


def test_split_size_errors():
    with pytest.raises(PruneexpError, match="val_size"):
        load_data(make_cfg("digits", val_size=2000), "cpu")
    with pytest.raises(PruneexpError, match="test_size"):
        load_data(make_cfg("digits", test_size=0), "cpu")


# --------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_shape_classes_and_learnable():
    cfg = make_cfg("synthetic", shape=[3, 4, 4], num_classes=4, train_size=400)
    s = load_data(cfg, "cpu")
    assert_splits(s, 400, 64, 128, (3, 4, 4), 4)
    assert len(set(s.train_y.tolist())) == 4
    assert_normalized(s.train_x)
    assert torch.equal(s.train_x, load_data(cfg, "cpu").train_x)

    torch.manual_seed(0)
    model = torch.nn.Linear(48, 4)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    xt, xv = s.train_x.flatten(1), s.val_x.flatten(1)

    def val_acc() -> float:
        with torch.no_grad():
            return (model(xv).argmax(1) == s.val_y).float().mean().item()

    before = val_acc()
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), s.train_y).backward()
        opt.step()
    after = val_acc()
    assert after > 0.7 and after > before + 0.2, (before, after)


# --------------------------------------------------------------------------------------------
# mnist1d


def test_mnist1d_generates_then_hits_cache(tmp_path, monkeypatch):
    cfg = make_cfg("mnist1d", cache_dir=str(tmp_path / "cache"))
    path = mnist1d_cache_file(cfg)
    assert not path.exists()
    np_state = np.random.get_state()[1].copy()
    s = load_data(cfg, "cpu")
    assert np.array_equal(np.random.get_state()[1], np_state)  # global numpy RNG untouched
    assert path.is_file() and path.parent == tmp_path / "cache"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    assert_splits(s, 3500, 500, 1000, (40,), 10)
    assert_normalized(s.train_x)

    import mnist1d.data

    def no_generation(*a, **k):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(mnist1d.data, "make_dataset", no_generation)
    again = load_data(cfg, "cpu")
    assert torch.equal(s.train_x, again.train_x) and torch.equal(s.test_y, again.test_y)


# --------------------------------------------------------------------------------------------
# torchvision formats, faked on disk


def write_idx(path: Path, arr: np.ndarray) -> None:
    """IDX: magic 0x0000 <dtype 0x08 = ubyte> <ndim>, then big-endian int32 dims, then data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def fake_mnist(root: Path, n_train: int = 100, n_test: int = 20) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    assert (raw / "train-images-idx3-ubyte").read_bytes()[:4] == b"\x00\x00\x08\x03"  # 2051
    assert (raw / "train-labels-idx1-ubyte").read_bytes()[:4] == b"\x00\x00\x08\x01"  # 2049


def test_fake_mnist_through_real_loader(tmp_path):
    fake_mnist(tmp_path)
    s = load_data(make_cfg("mnist", root=str(tmp_path), download=False, val_size=10), "cpu")
    assert_splits(s, 90, 10, 20, (1, 28, 28), 10)
    assert torch.equal(torch.sort(torch.cat([s.train_y, s.val_y])).values, torch.sort(torch.arange(100) % 10).values)
    assert_normalized(s.train_x)
    raw = DATASETS.get("mnist")(make_cfg("mnist", root=str(tmp_path)))
    assert float(raw.train_x.min()) >= 0 and float(raw.train_x.max()) <= 1  # uint8 / 255


def fake_cifar10(root: Path, per_batch: int = 4, n_test: int = 6) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name: str, obj) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    for i, n in [(f"data_batch_{k}", per_batch) for k in range(1, 6)] + [("test_batch", n_test)]:
        dump(i, {
            "batch_label": f"fake {i}",
            "labels": [int(v) for v in rng.integers(0, 10, n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),  # rows: R plane, G, B (32x32 each)
            "filenames": [f"img{j}.png" for j in range(n)],
        })
    dump("batches.meta", {"label_names": [f"class{k}" for k in range(10)], "num_cases_per_batch": per_batch,
                          "num_vis": 3072})


def test_fake_cifar10_through_real_loader(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    fake_cifar10(tmp_path)
    # the fake files cannot match CIFAR's md5 sums: check existence only
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    cfg = make_cfg("cifar10", root=str(tmp_path), download=False, val_size=5)
    s = load_data(cfg, "cpu")
    assert_splits(s, 15, 5, 6, (3, 32, 32), 10)
    assert isinstance(s.augment, CropFlip)
    assert_normalized(s.train_x)
    # channel order: the first 1024 bytes of a row are the red plane
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        first = pickle.load(f)["data"][0]
    raw = DATASETS.get("cifar10")(cfg)
    assert torch.equal(raw.test_x[0, 0].flatten(), torch.tensor(first[:1024] / 255.0, dtype=torch.float32))
    g = torch.Generator().manual_seed(0)
    assert s.augment(s.train_x, g).shape == s.train_x.shape


def test_corrupt_files_are_never_downloaded_over(tmp_path):
    # files present but rejected (md5 mismatch): error, and the folder is left as it was
    fake_cifar10(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(PruneexpError, match="left untouched"):
        load_data(make_cfg("cifar10", root=str(tmp_path), download=True), "cpu")
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


# --------------------------------------------------------------------------------------------
# missing data


def test_missing_mnist_without_download(tmp_path):
    root = tmp_path / "empty"
    with pytest.raises(PruneexpError) as err:
        load_data(make_cfg("mnist", root=str(root), download=False), "cpu")
    msg = str(err.value)
    assert str(root) in msg and "PRUNEEXP_DATA" in msg and "dataset.root=" in msg and "MNIST/raw" in msg
    assert "\n" not in msg
    assert not root.exists()


def test_missing_mnist_download_fails_fast_and_cleans_up(tmp_path):
    root = tmp_path / "nothing" / "here"
    t0 = time.perf_counter()
    with pytest.raises(PruneexpError) as err:
        load_data(make_cfg("mnist", root=str(root), download=True), "cpu")
    elapsed = time.perf_counter() - t0
    assert elapsed < 25, f"download attempt took {elapsed:.1f}s"
    msg = str(err.value)
    assert str(root) in msg and "PRUNEEXP_DATA" in msg and "ownload" in msg
    assert list(tmp_path.iterdir()) == []  # the failed attempt's folders were removed


# --------------------------------------------------------------------------------------------
# real MNIST from the shared folder


def shared_root() -> Path:
    env = os.environ.get("PRUNEEXP_DATA")
    return Path(env) if env else (REPO / ".." / "shared" / "data").resolve()


def test_real_mnist_from_shared_folder_read_only():
    root = shared_root()
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(f"no MNIST under {root} (set PRUNEEXP_DATA to the folder that holds MNIST/raw)")
    stamp = lambda: {str(p): p.stat().st_mtime_ns for p in [root, *root.rglob("*")]}  # noqa: E731
    before = stamp()
    s = load_data(make_cfg("mnist", root=str(root)), "cpu")  # download=True by default: must not write
    assert_splits(s, 55000, 5000, 10000, (1, 28, 28), 10)
    assert_normalized(s.train_x)
    assert stamp() == before


# --------------------------------------------------------------------------------------------
# augmentation


def test_crop_flip_identity_and_shift():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    same = crop_flip(x, torch.tensor([4, 4]), torch.tensor([4, 4]), torch.tensor([False, False]), pad=4)
    assert torch.equal(same, x)
    flipped = crop_flip(x, torch.tensor([4, 4]), torch.tensor([4, 4]), torch.tensor([True, False]), pad=4)
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])
    # sample 0 shifted down by 1 (dy=5) and right by 2 (dx=6); sample 1 shifted up-left (3, 3)
    out = crop_flip(x, torch.tensor([5, 3]), torch.tensor([6, 3]), torch.tensor([False, False]), pad=4)
    assert torch.equal(out[0, :, :-1, :-2], x[0, :, 1:, 2:])
    assert torch.equal(out[1, :, 1:, 1:], x[1, :, :-1, :-1])
    # reflect padding: the row above the image is row 1
    assert torch.equal(out[1, :, 0, 1:], x[1, :, 1, :-1])


def test_random_crop_flip_per_sample_and_reproducible():
    n = 512
    x = torch.randn(n, 3, 32, 32)
    aug = CropFlip()
    a = aug(x, torch.Generator().manual_seed(123))
    b = aug(x, torch.Generator().manual_seed(123))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(124)))

    # recover each sample's (dy, dx, flip) by trying all 162 candidates: offsets differ per sample
    g = torch.Generator().manual_seed(7)
    out = random_crop_flip(x, g)
    m = 64
    combos = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)]
    hits = torch.zeros(m, len(combos), dtype=torch.bool)
    for j, (dy, dx, f) in enumerate(combos):
        cand = crop_flip(x[:m], torch.full((m,), dy), torch.full((m,), dx), torch.full((m,), f))
        hits[:, j] = (cand == out[:m]).flatten(1).all(1)
    assert bool((hits.sum(1) == 1).all())  # exactly one candidate explains each sample
    found = [combos[j] for j in hits.float().argmax(1).tolist()]
    assert len({(dy, dx) for dy, dx, _ in found}) > 10  # not one shift for the whole batch
    flips = sum(f for _, _, f in found)
    assert 16 <= flips <= 48  # ~half flipped

    # the same draws as a replay of the generator
    g = torch.Generator().manual_seed(7)
    dy = torch.randint(0, 9, (n,), generator=g)
    dx = torch.randint(0, 9, (n,), generator=g)
    fl = torch.rand(n, generator=g) < 0.5
    assert torch.equal(out, crop_flip(x, dy, dx, fl))
    assert 0.4 < fl.float().mean().item() < 0.6


def test_augment_rejects_non_images():
    with pytest.raises(PruneexpError, match="augment"):
        load_data(make_cfg("synthetic", shape=[40], augment=True), "cpu")
    assert load_data(make_cfg("synthetic", shape=[40]), "cpu").input_shape == (40,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda():
    s = load_data(make_cfg("digits", augment=True), "cuda")
    assert s.train_x.is_cuda and s.test_y.is_cuda
    g = torch.Generator(device="cuda").manual_seed(0)
    out = s.augment(s.train_x, g)
    assert out.is_cuda and out.shape == s.train_x.shape
    cpu = load_data(make_cfg("digits"), "cpu")
    assert torch.equal(cpu.val_y, s.val_y.cpu())  # the split does not depend on the device
