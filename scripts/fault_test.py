"""Kill runs at many points and check that, once started again, they end with exactly the files of
an uninterrupted run (levels.csv and layers.csv byte for byte, train_log.csv without wall times,
level files by content, no temporaries left).

Two kinds of kill:
- simulated, in this process (tests/faults.py): at every atomic file write (a torn temporary left
  behind, or just after the rename) and before/after every training phase, each followed by a
  resume that is itself killed at a random write, then a final run;
  (mid-training checkpoints are on, every epoch, so kills land inside levels too);
- real: `pruneexp run` in a subprocess sent SIGKILL after a random delay (during training, a write
  or a resume, wherever it happens to be), up to three times, then run to completion.

    python scripts/fault_test.py                    # every simulated point + 10 real SIGKILLs
    python scripts/fault_test.py --points 20 --sigkills 5

Prints the kill points survived; exit 1 if any run ends different from the reference."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

OVERRIDES = ["dataset=digits", "hardware=cpu_1thread", "hardware.levels=none", "schedule=imp", "schedule.levels=2",
             "train.duration=3ep", "schedule.finetune.duration=2ep", "quiet=true",
             "hardware.checkpoint_every=1ep"]  # kills inside a level resume from its last checkpoint


def make_cfg(results: Path):
    """The fault-test run config, writing under `results`."""
    from hydra import compose, initialize_config_dir

    from pruneexp.cli import CONF_DIR
    from pruneexp.conf_store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"results_dir={results}", *OVERRIDES])


def simulated(work: Path, want: Path, reference, count: int | None, rng: random.Random) -> tuple[int, list[str]]:
    """Kill at each simulated point (or `count` random ones); return (survived, failures)."""
    from faults import compare_runs, kill_points, run_killed_at

    from pruneexp.runner import run

    points = kill_points(reference)
    if count is not None:
        points = rng.sample(points, min(count, len(points)))
    survived, failures = 0, []
    for k, point in enumerate(points):
        cfg = make_cfg(work / f"sim{k}")
        wheres = [run_killed_at(cfg, kill_at).where or "not reached"
                  for kill_at in (point, ("write", rng.randrange(reference.writes), rng.choice(["torn", "after"])))]
        diffs = compare_runs(run(cfg).directory, want)
        if diffs:
            failures.append(f"simulated kill at {wheres}: {diffs}")
        else:
            survived += 1
        shutil.rmtree(work / f"sim{k}")
    return survived, failures


def real(work: Path, want: Path, count: int, rng: random.Random) -> tuple[int, list[str]]:
    """SIGKILL a subprocess run after random delays, up to three times, then finish it."""
    from faults import compare_runs

    env = {**os.environ, "PRUNEEXP_DATA": os.environ.get("PRUNEEXP_DATA", str(REPO.parent / "shared" / "data"))}
    cmd = [sys.executable, "-m", "pruneexp", "run", *OVERRIDES]
    start = time.perf_counter()
    subprocess.run([*cmd, f"results_dir={work / 'timing'}"], env=env, check=True, capture_output=True)
    duration = time.perf_counter() - start
    survived, failures = 0, []
    for k in range(count):
        results = work / f"real{k}"
        delays = []
        for _ in range(rng.randint(1, 3)):
            proc = subprocess.Popen([*cmd, f"results_dir={results}"], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            delay = rng.uniform(0.2, duration)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            delays.append(round(delay, 2))
        subprocess.run([*cmd, f"results_dir={results}"], env=env, check=True, capture_output=True)
        directory = next(results.glob("default/*/summary.json")).parent
        diffs = compare_runs(directory, want)
        if diffs:
            failures.append(f"SIGKILL after {delays} s: {diffs}")
        else:
            survived += 1
        shutil.rmtree(results)
    return survived, failures


def main() -> None:
    """Run the fault test; print the kill points survived; exit 1 on any difference."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=None, help="random simulated kill points (default: all)")
    parser.add_argument("--sigkills", type=int, default=10, help="runs killed by a real SIGKILL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    opts = parser.parse_args()
    from faults import Faults, injected

    from pruneexp.runner import run

    work = opts.work or Path(tempfile.mkdtemp(prefix="pruneexp-faults-"))
    rng = random.Random(opts.seed)
    reference = Faults()
    with injected(reference):
        want = run(make_cfg(work / "reference")).directory
    ok_sim, bad_sim = simulated(work, want, reference, opts.points, rng)
    ok_real, bad_real = real(work, want, opts.sigkills, rng) if opts.sigkills else (0, [])
    total = ok_sim + len(bad_sim) + ok_real + len(bad_real)
    for line in bad_sim + bad_real:
        print("FAILED:", line)
    print(f"simulated: {ok_sim} of {ok_sim + len(bad_sim)}; SIGKILL: {ok_real} of {ok_real + len(bad_real)}")
    print(f"survived {ok_sim + ok_real} of {total} kill points")
    if opts.work is None:
        shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(1 if bad_sim or bad_real else 0)


if __name__ == "__main__":
    main()
