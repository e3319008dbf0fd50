"""dataset=imagefolder: images streamed from class folders by DataLoader workers, on a generated
folder of PNGs (3 classes; 8 training and 2 test images each, 40 px, read at 16 or 32 px).

The stream's batches are a function of (seed, epoch, step): the same after a restart and with any
number of workers, other ones in another epoch; evaluation is deterministic; the validation split is
held out of train/ by split_seed alone; a run on it prunes, and a run killed mid-epoch resumes to
the files of one never stopped."""

from __future__ import annotations

import pytest
import torch
from faults import compare_runs, run_killed_at
from omegaconf import OmegaConf

from pruneexp.config import DatasetConfig, TrainConfig
from pruneexp.data import StreamSplits, load_data
from pruneexp.data.imagefolder import write_image_folder
from pruneexp.errors import PruneexpError
from pruneexp.runner import run, run_directory
from pruneexp.train import training_batches
from pruneexp.validate import validate


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"), classes=3, per_class=8, val_per_class=2, size=(36, 44))


def stream(path, **over) -> StreamSplits:
    cfg = OmegaConf.merge(OmegaConf.structured(DatasetConfig), dict(name="imagefolder", path=str(path), image_size=32,
                                                                     val_size=4, augment=True, workers=0), over)
    return load_data(cfg, "cpu")


def batches(data: StreamSplits, start: int, stop: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(training_batches(data, OmegaConf.structured(TrainConfig(batch_size=4)), seed, start, stop))


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def test_the_stream_gives_the_same_batches_for_the_same_seed_and_epoch_with_any_worker_count(folder):
    data = stream(folder)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (20, 4, 6)  # 5 steps per epoch
    steps = batches(data, 0, 10)
    assert [x.shape for x, _ in steps] == [(4, 3, 32, 32)] * 10 and steps[0][0].dtype == torch.float32
    # a restart: new loader objects, two worker processes, and a segment starting mid-epoch
    again = stream(folder, workers=2)
    assert same(batches(again, 0, 10), steps)
    assert same(batches(again, 7, 10), steps[7:])
    # the next epoch: other images in other crops; another seed: another order
    assert not torch.equal(steps[0][0], steps[5][0])
    assert sorted(torch.cat([y for _, y in steps[:5]]).tolist()) == sorted(data.train_y.tolist())  # each image once an epoch
    assert not same(batches(data, 0, 5, seed=1), steps[:5])
    # augmentation is per image, not per batch: the same image in two epochs gets two crops
    epoch0, epoch1 = (torch.cat([x for x, _ in steps[e * 5 : e * 5 + 5]]) for e in (0, 1))
    assert not any(torch.equal(a, b) for a in epoch0 for b in epoch1)
    # the training process's own RNG (dropout, snapshots) is left as it was by decoding in it
    state = torch.get_rng_state()
    batches(data, 0, 2)
    assert torch.equal(torch.get_rng_state(), state)


def test_each_process_streams_its_share_of_every_global_batch(folder):
    """Under DDP each rank reads only its contiguous share of a global batch, augmented by the same
    (seed, epoch, index) seeds: the ranks' batches side by side are the one-process batch, bit for bit."""
    data = stream(folder)
    cfg = OmegaConf.structured(TrainConfig(batch_size=4))
    whole = batches(data, 3, 8)
    shares = [list(training_batches(data, cfg, 0, 3, 8, rank, 2)) for rank in range(2)]
    assert [x.shape[0] for x, _ in shares[0]] == [2] * 5
    joined = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(*shares)]
    assert same(joined, whole)


def test_evaluation_reads_the_same_tensors_every_time_and_augment_false_trains_on_them(folder):
    data = stream(folder)
    first, second = (list(data.eval_batches("test", 4)) for _ in range(2))
    assert [len(y) for _, y in first] == [4, 2] and same(first, second)
    plain = stream(folder, augment=False)
    x, _ = next(iter(plain.train_batches(torch.arange(4), 4, seed=0, epoch=0)))
    x1, _ = next(iter(plain.train_batches(torch.arange(4), 4, seed=0, epoch=1)))
    assert torch.equal(x, x1)  # no augmentation: the evaluation transform every epoch
    raw = stream(folder, normalize=False)
    xr = torch.cat([x for x, _ in raw.eval_batches("val", 4)])
    assert 0.0 <= float(xr.min()) and float(xr.max()) <= 1.0  # [0, 1] before the ImageNet mean/std


def test_validation_is_held_out_of_train_by_split_seed_and_test_is_val_or_held_out(folder, tmp_path):
    data, again, other = stream(folder), stream(folder, workers=2), stream(folder, split_seed=1)
    train, val = set(data.train_idx.tolist()), set(data.val_idx.tolist())
    assert not train & val and train | val == set(range(24))  # every train/ image in exactly one
    assert torch.equal(data.val_idx, again.val_idx) and not torch.equal(data.val_idx, other.val_idx)
    assert data.test_idx.tolist() == list(range(24, 30))  # val/ is the test split
    only_train = write_image_folder(tmp_path / "no_val", classes=3, per_class=8, size=(36, 44))
    held = stream(only_train, test_size=5)
    parts = [set(held.split_indices(s).tolist()) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [15, 4, 5] and set.union(*parts) == set(range(24)) and sum(map(len, parts)) == 24


def test_tiny_imagenet_layout_nested_train_images_and_annotated_val(tmp_path):
    import shutil

    root = write_image_folder(tmp_path / "tiny", classes=2, per_class=4, val_per_class=2, size=(36, 44))
    lines = []
    for k in range(2):  # train/<class>/images/<file>; val/images/<file> named in val/val_annotations.txt
        (root / "train" / f"c{k}" / "images").mkdir()
        for f in (root / "train" / f"c{k}").glob("*.png"):
            f.rename(root / "train" / f"c{k}" / "images" / f.name)
        (root / "val" / "images").mkdir(exist_ok=True)
        for f in sorted((root / "val" / f"c{k}").glob("*.png")):
            f.rename(root / "val" / "images" / f"val_{k}_{f.name}")
            lines.append(f"val_{k}_{f.name}\tc{k}\t0\t0\t8\t8")
        shutil.rmtree(root / "val" / f"c{k}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    data = stream(root, val_size=2)
    assert (len(data.train_y), len(data.val_y)) == (6, 2) and data.test_y.tolist() == [0, 0, 1, 1]
    assert [x.shape for x, _ in data.eval_batches("test", 4)] == [(4, 3, 32, 32)]


def test_missing_or_misplaced_images_are_refused_naming_the_layout(tmp_path, make_cfg):
    for path, what in [("", "dataset.path is not set"), (tmp_path / "none", "does not exist"),
                       (write_image_folder(tmp_path / "flat", per_class=0), "no training folder")]:
        with pytest.raises(PruneexpError, match=what) as err:
            stream(path)
        assert "train/<class>/<image>" in str(err.value)
    (tmp_path / "flat" / "train").mkdir()
    with pytest.raises(PruneexpError, match="holds no class folders"):
        stream(tmp_path / "flat")
    (tmp_path / "flat" / "train" / "cat").mkdir()
    with pytest.raises(PruneexpError, match="no images in them"):
        stream(tmp_path / "flat")
    with pytest.raises(PruneexpError, match="needs dataset.path"):  # validate(), before anything is read
        run(make_cfg("dataset=imagefolder", "quiet=true"))
    for bad, what in [("dataset.workers=-1", "dataset.workers"), ("train.label_smoothing=1.0", "label_smoothing"),
                      ("dataset.image_size=4", "image_size")]:
        with pytest.raises(PruneexpError, match=what):
            validate(make_cfg("dataset=imagefolder", f"dataset.path={tmp_path}", bad))


RUN = ["dataset=imagefolder", "dataset.image_size=16", "dataset.val_size=4", "model=conv2", "criterion=taylor",
       "criterion.batches=2", "criterion.batch_size=4", "sparsity=0.5", "train.batch_size=4", "train.duration=2ep",
       "train.eval_every=3it", "train.eval_batch_size=8", "train.label_smoothing=0.1", "schedule.finetune.duration=1ep",
       "hardware=cpu_1thread", "hardware.levels=none", "quiet=true"]


def test_a_streamed_run_prunes_and_a_run_killed_mid_epoch_resumes_to_the_same_files(folder, make_cfg, tmp_path):
    every = ["hardware.checkpoint_every=3it", f"dataset.path={folder}"]
    reference = make_cfg(*RUN, *every, "dataset.workers=0", f"results_dir={tmp_path / 'reference'}")
    counted = run_killed_at(reference, None)
    rows = run(reference).levels  # already complete: its rows
    assert [r["name"] for r in rows] == ["dense", "pruned", "finetuned"] and rows[1]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    checkpoints = [i for i, n in enumerate(counted.names) if n.endswith(".pt") and "-" in n and not n.startswith("level_")]
    assert len(checkpoints) >= 2
    # killed after the second checkpoint (step 6: epoch 1, its second batch), resumed with two workers
    cfg = make_cfg(*RUN, *every, "dataset.workers=2", f"results_dir={tmp_path / 'killed'}")
    assert run_directory(cfg).name == run_directory(reference).name  # workers are not in the run hash
    assert run_killed_at(cfg, ("write", checkpoints[1], "after")).dead
    run(cfg)
    assert compare_runs(run_directory(cfg), run_directory(reference)) == []
    # label smoothing enters the hash only when set
    unsmoothed = [o for o in RUN if not o.startswith("train.label_smoothing")]
    assert run_directory(make_cfg(*unsmoothed, *every)) != run_directory(reference)
    assert run_directory(make_cfg(*unsmoothed, *every)) == run_directory(make_cfg(*unsmoothed, *every, "train.label_smoothing=0"))
