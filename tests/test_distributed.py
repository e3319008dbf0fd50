"""One run over several processes (pruneexp.distributed, issue 25 item 3), on CPU with gloo.

Two processes on the same global batch as one process: the same masks, the same files, the same
records up to float rounding (DDP averages the two half-batch gradients; one process averages
the whole batch at once: the losses agree to ~1e-7, so the tolerance below is rtol 1e-5 on losses
and at most one example on accuracies, whose predictions sit within rounding of a tie). A rank
SIGKILLed mid-training fails the run with an error naming it, and a rerun resumes from the
checkpoint and levels on disk to the files of an uninterrupted run."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from faults import compare_runs
from pruneexp import distributed
from pruneexp.cli import CONF_DIR
from pruneexp.conf_store import register_configs
from pruneexp.errors import PruneexpError
from pruneexp.runner import run, run_directory
from pruneexp.train.loop import batch_indices
from pruneexp.validate import typed_config, validate

WORKER = str(Path(__file__).resolve().parent / "ddp_worker.py")
# LeNet-300-100 on digits (1137 training examples, 17 global batches of 64 per epoch), a
# data-dependent criterion (Taylor: gradients of the scoring batches), checkpoints every epoch
RUN = ["dataset=digits", "model=lenet_300_100", "criterion=taylor", "train.duration=2ep", "schedule.finetune.duration=2ep",
       "train.batch_size=64", "hardware.threads=1", "hardware.levels=none", "hardware.checkpoint_every=1ep",
       "share_dense=false", "quiet=true"]


def compose_run(results: Path, *extra: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"results_dir={results}", *RUN, *extra])


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The run in 1 process (here) and in 2 processes (`pruneexp run hardware.devices=2`)."""
    tmp = tmp_path_factory.mktemp("ddp")
    one = run(compose_run(tmp / "one")).directory
    env = {**os.environ, "PRUNEEXP_CACHE": str(tmp / "cache")}
    done = subprocess.run([sys.executable, "-m", "pruneexp", "run", f"results_dir={tmp / 'two'}", *RUN, "hardware.devices=2"],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp, one, run_directory(typed_config(compose_run(tmp / "two")))


def test_two_processes_select_the_masks_of_one_and_agree_on_the_records(runs):
    _, one, two = runs
    assert one.name == two.name  # hardware.devices is not in the run hash
    for level in (1, 2):
        a, b = (torch.load(d / "levels" / f"level_{level:03d}.pt", weights_only=True) for d in (one, two))
        assert a["masks"]["masks"].keys() == b["masks"]["masks"].keys()
        for name, mask in a["masks"]["masks"].items():
            assert torch.equal(mask, b["masks"]["masks"][name]), name
    x, y = pd.read_csv(one / "levels.csv"), pd.read_csv(two / "levels.csv")
    assert list(x.columns) == list(y.columns) and len(x) == len(y) == 3
    counts = ["sparsity", "nonzero_prunable", "nonzero_params", "train_steps", "best_step"]
    pd.testing.assert_frame_equal(x[counts], y[counts])
    for split, n in (("val", 300), ("test", 360)):
        assert (x[f"{split}_loss"] - y[f"{split}_loss"]).abs().max() <= 1e-5 * x[f"{split}_loss"].abs().max()
        assert (x[f"{split}_acc"] - y[f"{split}_acc"]).abs().max() <= 1 / n + 1e-12
    logs = [pd.read_csv(d / "train_log.csv") for d in (one, two)]
    assert logs[0]["step"].tolist() == logs[1]["step"].tolist()
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(logs[0]["train_loss"], logs[1]["train_loss"]))


def test_only_rank_0_writes(runs):
    tmp, one, two = runs
    assert files(tmp / "one") == files(tmp / "two")  # the run directory and nothing beside it
    assert "checkpoints" not in " ".join(files(two))  # removed once the run completed
    summary = pd.read_json(two / "summary.json", typ="series")
    assert summary["status"] == "complete" and summary["processes"] == 2


def test_a_killed_rank_fails_the_run_clearly_and_a_rerun_resumes_to_the_uninterrupted_files(runs, monkeypatch):
    tmp, _, reference = runs
    results = tmp / "killed"
    directory = run_directory(typed_config(compose_run(results)))
    args = ["run", f"results_dir={results}", *RUN]
    monkeypatch.setenv("PRUNEEXP_TEST_KILL", f"1 finetune {directory}")
    with pytest.raises(PruneexpError, match=r"rank 1 of 2 died \(SIGKILL\), and the run stopped.*resumes"):
        distributed.launch(2, args, entrypoint=WORKER)
    left = files(directory)
    assert "levels/level_001.pt" in left and any(f.startswith("checkpoints/finetune") for f in left)
    assert "levels/level_002.pt" not in left
    monkeypatch.delenv("PRUNEEXP_TEST_KILL")
    distributed.launch(2, args, entrypoint=WORKER)
    assert (directory / "levels.csv").read_bytes() == (reference / "levels.csv").read_bytes()
    assert compare_runs(directory, reference) == []


def test_each_rank_takes_its_share_of_every_global_batch():
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    for i in range(5):
        shards = [batch_indices(order, i, 8, rank, 4) for rank in range(4)]
        assert all(len(s) == 2 for s in shards)
        assert torch.equal(torch.cat(shards), batch_indices(order, i, 8) )
        assert torch.equal(batch_indices(order, i, 8), order[i * 8 : (i + 1) * 8])


def test_the_process_count_comes_from_torchrun_or_slurm_or_submitits_local_tasks(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID",
                "SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_NTASKS", "SUBMITIT_LOCAL_LOCALID"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.Ranks.from_env() == distributed.Ranks(0, 1, 0)
    monkeypatch.setenv("SUBMITIT_LOCAL_GLOBALID", "1")
    monkeypatch.setenv("SUBMITIT_LOCAL_LOCALID", "1")
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "1")
    assert distributed.Ranks.from_env() == distributed.Ranks(0, 1, 0)  # one local task: one process
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "2")
    assert distributed.Ranks.from_env() == distributed.Ranks(1, 2, 1)  # submitit's local executor, tasks_per_node=2
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert distributed.Ranks.from_env() == distributed.Ranks(5, 8, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.Ranks.from_env() == distributed.Ranks(3, 4, 3)  # torchrun's variables first


def test_a_global_batch_that_does_not_split_is_refused_before_training(tmp_path):
    with pytest.raises(PruneexpError, match=r"train.batch_size=64 is the global batch.*multiple of 3 \(e.g. 63 or 66\)"):
        validate(compose_run(tmp_path, "hardware.devices=3"))
    with pytest.raises(PruneexpError, match="hardware.devices=0 must be at least 1"):
        validate(compose_run(tmp_path, "hardware.devices=0"))


def test_the_process_count_and_timeout_stay_out_of_the_run_hash(tmp_path):
    base = run_directory(typed_config(compose_run(tmp_path)))
    assert run_directory(typed_config(compose_run(tmp_path, "hardware.devices=2", "hardware.dist_timeout_s=60"))) == base


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nccl and SyncBatchNorm need CUDA")
def test_batchnorm_is_synchronised_on_cuda_and_plain_again_after(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).cuda()
    monkeypatch.setattr(distributed, "active", lambda: True)
    with distributed.synced_batchnorm(model):
        assert type(model[1]) is torch.nn.SyncBatchNorm
    assert type(model[1]) is torch.nn.BatchNorm2d


def test_an_augmented_resident_batch_is_drawn_whole_and_then_split(make_cfg):
    """Device-side augmentation is seeded per global batch, so it is drawn for the whole batch (as one
    process draws it) and each rank keeps its share: the ranks' batches side by side are the one-process batch."""
    from pruneexp.data import load_data
    from pruneexp.train.loop import training_batches

    cfg = make_cfg("dataset=synthetic", "dataset.shape=[3,32,32]", "dataset.train_size=24", "dataset.val_size=4",
                   "dataset.test_size=4", "dataset.augment=true", "train.batch_size=8")
    data = load_data(cfg.dataset, "cpu")
    assert data.augment is not None
    whole = list(training_batches(data, cfg.train, 0, 1, 5))
    shares = [list(training_batches(data, cfg.train, 0, 1, 5, rank, 2)) for rank in range(2)]
    assert [x.shape[0] for x, _ in shares[1]] == [4] * 4
    for (x, y), a, b in zip(whole, *shares):
        assert torch.equal(x, torch.cat([a[0], b[0]])) and torch.equal(y, torch.cat([a[1], b[1]]))


def test_a_streamed_run_in_two_processes_writes_the_files_of_one(tmp_path):
    """dataset=imagefolder under DDP: each rank streams its share of every global batch from disk
    (the same per-image seeds), rank 0 scores from the stream; conv2 has no BatchNorm, so the run in
    2 processes writes the levels.csv of 1 process byte for byte (Taylor masks, accuracies, losses)."""
    from pruneexp.data.imagefolder import write_image_folder

    folder = write_image_folder(tmp_path / "images", classes=3, per_class=8, val_per_class=2, size=(36, 44))
    over = ["dataset=imagefolder", f"dataset.path={folder}", "dataset.image_size=32", "dataset.val_size=4", "dataset.workers=0",
            "model=conv2", "schedule=oneshot", "criterion=taylor", "sparsity=0.5", "train.duration=2ep",
            "schedule.finetune.duration=1ep", "train.batch_size=4", "hardware.levels=none", "hardware.threads=1",
            "quiet=true", "share_dense=false"]
    env = {**os.environ, "PRUNEEXP_CACHE": str(tmp_path / "cache")}
    dirs = []
    for devices in (1, 2):
        results = tmp_path / f"r{devices}"
        done = subprocess.run([sys.executable, "-m", "pruneexp", "run", f"results_dir={results}", *over, f"hardware.devices={devices}"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        (run_dir,) = [p.parent for p in results.rglob("levels.csv")]
        dirs.append(run_dir)
    assert dirs[0].name == dirs[1].name
    assert (dirs[0] / "levels.csv").read_bytes() == (dirs[1] / "levels.csv").read_bytes()
    a, b = (torch.load(d / "levels" / "level_001.pt", weights_only=True)["masks"]["masks"] for d in dirs)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)



def _threads() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def _close_rank(rank: int, port: int, out: str) -> None:
    """One of 2 gloo ranks: a DDP step and pruneexp's collectives (an evaluation handed on, a
    broadcast, a mean), then close(); writes how many threads the run group started and how many
    of them are left."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    made: set[str] = set()
    new_group = dist.new_group

    def watched(*args, **kwargs):
        before = _threads()
        group = new_group(*args, **kwargs)
        made.update(_threads() - before)
        return group

    dist.new_group = watched
    distributed.init("cpu")
    model = torch.nn.Linear(4, 2)
    distributed.data_parallel(model)(torch.ones(3, 4)).sum().backward()
    assert distributed.on_leader(lambda: {"acc": rank / 2}) == {"acc": 0.0}
    distributed.broadcast_([model.weight])
    distributed.mean_(torch.ones(2))
    distributed.close()
    Path(out, f"rank{rank}").write_text(f"{len(made)} {len(made & _threads())}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
def test_close_joins_the_threads_of_the_group_that_carried_the_runs_last_collectives(tmp_path):
    """pruneexp's own collectives run in a group of their own, destroyed at close() with its gloo
    threads joined though DDP was used (torch keeps DDP's group alive for good): no worker thread
    of the group that carried the run's last collectives is left to take the GIL while Python
    shuts down (std::terminate, a SIGABRT torchrun reported as a dead rank after a complete run)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_close_rank, args=(port, str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        made, left = map(int, (tmp_path / f"rank{rank}").read_text().split())
        assert made >= 1 and left == 0, (rank, made, left)


def test_submitit_tasks_per_node_make_one_run_of_the_files_of_one_process(runs):
    """hydra/launcher=submitit_local with tasks_per_node=2: submitit's stand-in for SLURM's tasks on
    one machine (each task the same Hydra job, its rank from submitit's job environment, MASTER_ADDR
    and MASTER_PORT from submitit's helper, as on a cluster) makes one run over 2 processes, with
    the masks and files of the 1-process run."""
    tmp, one, _ = runs
    results = tmp / "submitit"
    env = {**os.environ, "PRUNEEXP_CACHE": str(tmp / "cache")}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-m", "pruneexp", "run", "-m", "hydra/launcher=submitit_local",
                           "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={tmp / 'sweep'}",
                           f"results_dir={results}", *RUN], cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    directory = run_directory(typed_config(compose_run(results)))
    assert directory.name == one.name
    summary = pd.read_json(directory / "summary.json", typ="series")
    assert summary["status"] == "complete" and summary["processes"] == 2
    assert files(results) == files(tmp / "one")
    for level in (1, 2):
        a, b = (torch.load(d / "levels" / f"level_{level:03d}.pt", weights_only=True) for d in (one, directory))
        for name, mask in a["masks"]["masks"].items():
            assert torch.equal(mask, b["masks"]["masks"][name]), name


def test_a_collective_that_lost_its_peer_is_one_line_and_any_other_error_keeps_its_traceback():
    gloo = RuntimeError("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                        "[127.0.0.1]:7094. This is typically caused by a remote worker crashing.\nmore")
    said = distributed.lost_peer(gloo)
    assert said is not None and said.startswith("rank 0 of 1 lost its connection to another rank")
    assert "Connection closed by peer [127.0.0.1]:7094" in said and "more" not in said and "names the rank" in said
    assert distributed.lost_peer(torch.distributed.DistNetworkError("Connection reset by peer")) is not None
    assert distributed.lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert distributed.lost_peer(ValueError("Connection closed by peer")) is None  # not from a collective
