"""Run directories and shared caches stay right under failure and concurrency: a diverged run is
marked failed, damaged files are named (checksums), temporaries are cleaned, one process works in
a run directory at a time, a dense network shared by concurrent processes is trained once, and a
run killed at random points and started again ends with the files of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from faults import Faults, compare_runs, injected, kill_points, run_killed_at

from conftest import REPO, TINY
from pruneexp.errors import PruneexpError, TrainingDiverged
from pruneexp.runner import run, run_directory
from pruneexp.schedules.context import RunContext

FAST = [*TINY, "hardware=cpu_1thread", "hardware.levels=none"]  # no latency timing: seconds per run


def summary(directory: Path) -> dict:
    return json.loads((directory / "summary.json").read_text())


def test_a_diverging_run_is_marked_failed_with_its_message_and_resumes_later(make_cfg, monkeypatch):
    """The runner's half of divergence: whatever the loop raises stops the run, summary.json says
    `failed` with the message, nothing of the failed level is saved; a later run goes on."""
    cfg = make_cfg(*FAST)
    real = RunContext.train

    def diverging(self, model, masks, tcfg, phase, level, **kw):
        if phase == "finetune":
            raise TrainingDiverged(phase, 7, "the training loss")
        return real(self, model, masks, tcfg, phase, level, **kw)

    monkeypatch.setattr(RunContext, "train", diverging)
    with pytest.raises(TrainingDiverged, match="phase 'finetune' at step 7"):
        run(cfg)
    directory = run_directory(cfg)
    s = summary(directory)
    assert s["status"] == "failed" and "step 7" in s["error"] and s["levels"] == 2
    assert not (directory / "levels/level_002.pt").exists()
    monkeypatch.setattr(RunContext, "train", real)
    assert run(cfg).resumed_levels == 2 and summary(directory)["status"] == "complete"


def test_a_diverged_network_is_never_pruned_to_a_wrong_sparsity(make_cfg):
    """train.lr=50 on digits: the scores are NaN. The run stops with a clear error (the loop's
    TrainingDiverged, or the selector refusing non-finite scores), marked failed, nothing pruned."""
    cfg = make_cfg(*FAST, "train.lr=50")
    with pytest.raises(PruneexpError, match="diverged"):
        run(cfg)
    directory = run_directory(cfg)
    assert summary(directory)["status"] == "failed"
    assert not (directory / "levels/level_001.pt").exists()


def test_damaged_files_are_named_and_recomputed_once_deleted(make_cfg):
    cfg = make_cfg(*FAST)
    directory = run(cfg).directory
    reference = {n: (directory / n).read_bytes() for n in ("levels.csv", "layers.csv")}
    recorded = summary(directory)["files"]
    assert {"config.yaml", "levels.csv", "train_log.csv", "levels/level_002.pt"} <= set(recorded)
    level = directory / "levels/level_002.pt"
    level.write_bytes(level.read_bytes()[:1000])
    with pytest.raises(PruneexpError, match=r"level_002\.pt is damaged .*SHA-256.*delete it"):
        run(cfg)
    level.unlink()
    assert run(cfg).resumed_levels == 2  # recomputed, the same numbers
    assert all((directory / n).read_bytes() == b for n, b in reference.items())
    (directory / "config.yaml").unlink()
    assert run(cfg).resumed_levels == 3 and (directory / "config.yaml").exists()  # not "Already complete"
    (directory / "summary.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(PruneexpError, match=r"summary\.json is damaged"):
        run(cfg)
    (directory / "summary.json").unlink()  # no checksums left: torch's own reader must fail clearly
    (directory / "levels/level_001.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(PruneexpError, match=r"level_001\.pt is damaged \(.*delete it"):
        run(cfg)


def test_bench_verifies_checksums_before_timing(make_cfg):
    from pruneexp.bench import bench
    from pruneexp.cli import CONF_DIR

    directory = run(make_cfg(*FAST)).directory
    level = directory / "levels/level_002.pt"
    level.write_bytes(level.read_bytes()[:-10])
    with pytest.raises(PruneexpError, match=r"level_002\.pt is damaged"):
        bench(directory, ["hardware=cpu_1thread"], CONF_DIR)
    assert not list(directory.glob("latency_*.csv"))


def test_temporaries_of_a_killed_writer_are_cleaned(make_cfg):
    cfg = make_cfg(*FAST)
    directory = run(cfg).directory
    (directory / ".summary.json.ab12cd34").write_text("torn")
    (directory / "levels/.level_002.pt.k3j_x9ab").write_text("torn")
    run(cfg)
    assert sorted(p.name for p in directory.rglob(".*") if not p.name.endswith(".lock")) == []


def test_an_unwritable_results_folder_fails_before_any_work(make_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PruneexpError, match="Cannot write to .*results_dir="):
        run(make_cfg(*FAST, f"results_dir={blocker / 'results'}"))


def test_layer_rates_that_match_nothing_are_refused_before_training(make_cfg):
    cfg = make_cfg(*FAST, "prune.scope=layerwise", "+prune.layer_rates={nosuch: 0.5}")
    with pytest.raises(PruneexpError, match="'nosuch' matches no prunable layer"):
        run(cfg)
    assert not (run_directory(cfg) / "levels").exists() and not (run_directory(cfg) / "summary.json").exists()


@pytest.mark.parametrize("args, message", [
    (["hardware.threads=-2"], "hardware.threads=-2 must be at least 1"),
    (["train.duration=0ep"], "train.duration=0ep trains nothing"),
    (["train.lr=-1"], "train.lr=-1.0 must be a positive"),
    (["train.batch_size=0"], "train.batch_size=0 must be at least 1"),
])
def test_bad_values_are_named(make_cfg, args, message):
    from pruneexp.validate import validate

    with pytest.raises(PruneexpError, match=message.replace(".", r"\.")):
        validate(make_cfg(*args))


def test_every_error_exits_2_and_list_refuses_arguments(cli):
    for args, message in ((["list", "--bogus"], "takes no arguments"), (["run", "dataset=nope"], "Could not find"),
                          (["run", "sparsity=1.2"], "outside [0, 1)")):
        proc = cli(*args)
        assert proc.returncode == 2 and message in proc.stderr + proc.stdout, (args, proc.stderr)


def test_a_stale_lock_of_a_killed_process_is_recovered(make_cfg, tmp_path):
    """A process holding a run directory's lock and a shared cache file's lock is killed: the next
    process gets both at once (OS file locks die with their process)."""
    from pruneexp.runner import SharedFiles

    cfg = make_cfg(*FAST)
    directory, cache = run_directory(cfg), tmp_path / "cache_dir"
    directory.mkdir(parents=True)
    cache.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, filelock; ls = [filelock.FileLock(p) for p in sys.argv[1:]]; "
                               "[l.acquire() for l in ls]; print('locked', flush=True); time.sleep(120)",
                               str(directory / ".lock"), str(cache / ".dense.pt.lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    started = time.monotonic()
    files = SharedFiles(cache)
    assert files.load("dense.pt") is None and files.held == {"dense.pt"}  # this process computes it now
    files.save("dense.pt", {"w": 1})
    other = SharedFiles(cache)
    assert files.held == set() and other.load("dense.pt") == {"w": 1}
    other.release()
    assert run(cfg).levels and time.monotonic() - started < 60
    assert summary(directory)["status"] == "complete"


def _sans_time(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns="elapsed_s")


def test_concurrent_processes_share_one_dense_network_trained_once(cli, make_cfg, tmp_path):
    """Three processes start together: two sparsities and a duplicate of one, all on one dense
    network. It is trained once (the others wait and reuse it), the duplicate waits for its twin
    and finds it complete, and every run's files equal those of a sequential run."""
    args = [["sparsity=0.5"], ["sparsity=0.9"], ["sparsity=0.9"]]
    env = {**os.environ, "PRUNEEXP_RESULTS": str(tmp_path / "results"), "PRUNEEXP_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-m", "pruneexp", "run", *[a for a in FAST if a != "quiet=true"], *extra],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for extra in args]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    dirs = sorted(p.parent for p in (tmp_path / "results" / "default").glob("*/summary.json"))
    assert len(dirs) == 2
    uses = sorted(summary(d)["dense_cache"] for d in dirs)
    assert uses == ["reused", "trained"]
    assert sum("Already complete" in o[0] for o in outs) == 1
    for extra in args[:2]:
        seq = run(make_cfg(*FAST, *extra, f"results_dir={tmp_path / 'sequential'}")).directory
        par = tmp_path / "results" / "default" / seq.name
        for name in ("levels.csv", "layers.csv"):
            assert (par / name).read_bytes() == (seq / name).read_bytes(), (extra, name)
        assert _sans_time(par / "train_log.csv").equals(_sans_time(seq / "train_log.csv"))


def test_a_submitit_local_sweep_runs_both_jobs(cli, tmp_path):
    """hydra/launcher=submitit_local: two jobs, each its own process (as on a cluster), one dense network."""
    proc = cli("run", "-m", "hydra/launcher=submitit_local", "sparsity=0.5,0.8", *FAST, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = sorted(p.parent for p in (tmp_path / "results" / "default").glob("*/summary.json"))
    assert len(dirs) == 2 and all(summary(d)["status"] == "complete" for d in dirs)
    assert sorted(round(summary(d)["final"]["sparsity"], 3) for d in dirs) == [0.5, 0.8]
    assert sorted(summary(d)["dense_cache"] for d in dirs) == ["reused", "trained"]


def test_the_slurm_launcher_config_composes_with_its_knobs():
    from hydra import compose, initialize_config_dir

    from pruneexp.cli import CONF_DIR
    from pruneexp.conf_store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.gpus_per_node, launcher.timeout_min, launcher.array_parallelism, launcher.max_num_timeout) == (1, 240, 32, 3)


def test_an_optuna_sweep_maximises_the_returned_validation_accuracy(cli, tmp_path):
    import yaml

    proc = cli("run", "-m", "hydra/sweeper=optuna_sparsity", "hydra.sweeper.n_trials=2", "schedule=imp",
               "schedule.levels=1", *FAST, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = list((tmp_path / "results" / "default" / "multirun").glob("*/optimization_results.yaml"))
    assert len(found) == 1
    best = yaml.safe_load(found[0].read_text())["best_value"]
    finals = [summary(p.parent)["final"]["val_acc"] for p in (tmp_path / "results" / "default").glob("*/summary.json")]
    assert len(finals) == 2 and best == pytest.approx(max(finals))



def test_runs_killed_at_random_points_end_with_an_uninterrupted_runs_files(make_cfg, tmp_path):
    """The short fault test (scripts/fault_test.py is the long one): kill an imp run during a file
    write (torn temporary left), after one, or around a training phase; kill its resume too; run
    again; its files equal an uninterrupted run's."""
    overrides = [*FAST, "schedule=imp", "schedule.levels=2", "train.duration=3ep"]
    reference = Faults()
    with injected(reference):
        want = run(make_cfg(*overrides, f"results_dir={tmp_path / 'reference'}")).directory
    points = kill_points(reference)
    assert reference.trains == 3 and reference.writes > 15
    rng = random.Random(0)
    for k, point in enumerate(rng.sample(points, 5)):
        cfg = make_cfg(*overrides, f"results_dir={tmp_path / f'k{k}'}")
        first = run_killed_at(cfg, point)
        assert first.dead, point
        second = run_killed_at(cfg, ("write", rng.randrange(3, 12), rng.choice(["torn", "after"])))  # the resume killed too
        outcome = run(cfg)
        diffs = compare_runs(outcome.directory, want)
        assert not diffs, (first.where, second.where, diffs)
        assert summary(outcome.directory)["status"] == "complete"

