"""Cost of gradual pruning's updates: the same 2 000 MNIST steps of `schedule=gmp` with 2 updates
and with 100 (Zhu & Gupta's cubic, magnitude, LeNet-300-100, one thread), whole runs through the
runner. Since gmp is one `train()` call whose masks move through the sparsifier hook, an update
costs one prune step (plus an evaluation where it falls on an evaluation step).

Goal: 100 updates take at most 1.1x the time of 2 updates (issue 28; issue 9 asked <= 1.3).
`--clock cpu` counts the process's CPU time instead of wall time, for a machine shared with other
work (time other processes take from it is not counted; cache and memory contention still are).

    PRUNEEXP_DATA=/work/shared/data python scripts/bench_gmp.py [--repeats 3] [--clock wall|cpu] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchgoals import Figure, write_json  # noqa: E402

from pruneexp.cli import CONF_DIR  # noqa: E402
from pruneexp.conf_store import register_configs  # noqa: E402
from pruneexp.runner import run  # noqa: E402


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def seconds(updates: int, steps: int = 2000, clock=time.perf_counter) -> float:
    register_configs()
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"results_dir={tmp}", "quiet=true", "dataset=mnist", "schedule=gmp", "hardware=cpu_1thread", "hardware.levels=none",
            f"train.duration={steps}it", "schedule.start=0it", f"schedule.end={steps}it", f"schedule.frequency={steps // updates}it",
            "share_dense=false"])
        t0 = clock()
        out = run(cfg)
        took = clock() - t0
        assert len(out.levels) == updates + 2  # k = 0..n, then the trained network
        return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall", help="wall time, or the process's CPU time on a shared machine")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figure and its goal (for bench_all.py)")
    opts = parser.parse_args()
    torch.set_num_threads(1)
    two, hundred = [], []
    for _ in range(opts.repeats):  # interleaved: machine load hits both alike
        two.append(seconds(2, clock=CLOCK[opts.clock]))
        hundred.append(seconds(100, clock=CLOCK[opts.clock]))
    a, b = statistics.median(two), statistics.median(hundred)
    print(f"gmp, 2000 MNIST steps, 1 thread, {opts.clock} clock, median of {opts.repeats}: 2 updates {a:.2f} s, 100 updates {b:.2f} s, ratio {b / a:.2f}")
    print(f"  runs: 2 updates {', '.join(f'{v:.2f}' for v in two)}; 100 updates {', '.join(f'{v:.2f}' for v in hundred)}")
    if opts.json:
        write_json(opts.json, "bench_gmp", torch.get_num_threads(), [Figure(
            f"gmp, 2 000 MNIST steps, {opts.clock} clock: 100 updates / 2 updates", b / a, "<= 1.1", "issue 28 (issue 9: <= 1.3)",
            f"{b:.2f} vs {a:.2f} s, median of {opts.repeats}")])


if __name__ == "__main__":
    main()
