"""Cost of gradual pruning's updates: the same 2 000 MNIST steps of `schedule=gmp` with 2 updates
and with 100 (Zhu & Gupta's cubic, magnitude, LeNet-300-100, one thread), whole runs through the
runner. Since gmp is one `train()` call whose masks move through the sparsifier hook, an update
costs one prune step (plus an evaluation where it falls on an evaluation step).

    PRUNEEXP_DATA=/work/shared/data python scripts/bench_gmp.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir

from pruneexp.cli import CONF_DIR
from pruneexp.conf_store import register_configs
from pruneexp.runner import run


def seconds(updates: int, steps: int = 2000) -> float:
    register_configs()
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"results_dir={tmp}", "quiet=true", "dataset=mnist", "schedule=gmp", "hardware=cpu_1thread", "hardware.levels=none",
            f"train.duration={steps}it", "schedule.start=0it", f"schedule.end={steps}it", f"schedule.frequency={steps // updates}it",
            "share_dense=false"])
        t0 = time.perf_counter()
        out = run(cfg)
        took = time.perf_counter() - t0
        assert len(out.levels) == updates + 2  # k = 0..n, then the trained network
        return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    torch.set_num_threads(1)
    two, hundred = [], []
    for _ in range(opts.repeats):  # interleaved: machine load hits both alike
        two.append(seconds(2))
        hundred.append(seconds(100))
    a, b = statistics.median(two), statistics.median(hundred)
    print(f"gmp, 2000 MNIST steps, 1 thread, median of {opts.repeats}: 2 updates {a:.2f} s, 100 updates {b:.2f} s, ratio {b / a:.2f}")
    print(f"  runs: 2 updates {', '.join(f'{v:.2f}' for v in two)}; 100 updates {', '.join(f'{v:.2f}' for v in hundred)}")


if __name__ == "__main__":
    main()
