"""One lottery-ticket level, three ways, in one process: pruneexp's runner, a hand-written loop with
the same protocol, and the FLOP floor of the training step.

The protocol is `experiment=lth_lenet` (LeNet-300-100 on MNIST, Adam 1.2e-3, batch 60, validation
of 5 000 examples every 100 iterations, test of 10 000 where a result needs it) on one thread,
shortened to `--iters` iterations per level. pruneexp's figure is level 1 of a `schedule.levels=1`
run (the rewound, 20 %-pruned network), read from its train log (the time inside `train()`, every
evaluation included). The hand-written loop trains the same masked network from the same
initialisation with the same optimizer (fused Adam, pruneexp's default), evaluates validation every
100 iterations, keeps the weights at each new minimum of validation loss and tests them and the
final weights at the end, as pruneexp does. The FLOP floor is the time of
the step's matrix products alone (3 forward, 5 backward), timed at the same shapes.

    PRUNEEXP_DATA=/work/shared/data python scripts/bench_level.py [--iters 3000] [--repeats 3] [--baseline DIR] [--json PATH]

Prints ms per iteration of each and the ratios. Goals (issue 9): pruneexp at most 1.1x the
hand-written loop, and, against the checkout before issue 9 (`--baseline`), at most 0.6x its time. `--baseline DIR` also times the runner of another
checkout (e.g. `git worktree add /tmp/base <older commit>`), in a subprocess interleaved with the
others, so that both see the same machine load. `--clock cpu` counts the CPU time of the timing
thread instead of wall time (everything runs on one thread), for a machine shared with other work:
time the others take from it is not counted (cache and memory contention still are).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchgoals import Figure, write_json  # noqa: E402

from pruneexp.cli import CONF_DIR  # noqa: E402
try:
    from pruneexp.conf_store import register_configs  # noqa: E402
except ImportError:  # a --baseline checkout from before pruneexp/conf_store.py (it lived in config.py)
    from pruneexp.config import register_configs  # noqa: E402
from pruneexp.data import load_data  # noqa: E402
from pruneexp.runner import run  # noqa: E402
from pruneexp.train.optim import make_optimizer  # noqa: E402


EXTRA: list[str] = []  # --set KEY=VALUE overrides, e.g. train.optimizer_impl=foreach
CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}
now = time.perf_counter


def use_clock(name: str) -> None:
    """Time with `name` here and in the runner's loop (whose train log reads `time.perf_counter`)."""
    global now
    import types

    import pruneexp.train.loop as loop

    now = CLOCK[name]
    loop.time = types.SimpleNamespace(**{**vars(time), "perf_counter": now})


def compose_cfg(results: str, iters: int):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[
            "experiment=lth_lenet", f"results_dir={results}", "quiet=true", "save_checkpoints=false", "share_dense=false",
            "hardware=cpu_1thread", "hardware.levels=none", "schedule.levels=1", f"train.duration={iters}it", *EXTRA])


def pruneexp_ms(iters: int) -> float:
    """ms per iteration of level 1 as the runner trains it (train-log time / steps)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(tmp, iters)
        out = run(cfg)
        import pandas as pd

        log = pd.read_csv(out.directory / "train_log.csv")
        lvl = log[log["level"] == 1]
        return 1000.0 * float(lvl["elapsed_s"].iloc[-1]) / int(lvl["step"].iloc[-1])


def masked_lenet() -> tuple[torch.nn.Module, list[torch.Tensor], list[torch.Tensor]]:
    """LeNet-300-100 drawn with seed 0, 20 % of each weight masked (as a level-1 network): the
    model, its weights and their masks."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 300), torch.nn.ReLU(), torch.nn.Linear(300, 100),
                                torch.nn.ReLU(), torch.nn.Linear(100, 10))
    weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)]
    masks = [(torch.rand_like(w) > 0.2).float() for w in weights]
    with torch.no_grad():
        torch._foreach_mul_(weights, masks)
    return model, weights, masks


def hand_ms(iters: int) -> float:
    """ms per iteration of a minimal loop with the same protocol on the same data and shapes."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(tmp, iters)
    data = load_data(cfg.dataset, torch.device("cpu"))
    model, weights, masks = masked_lenet()
    opt = make_optimizer(model.parameters(), cfg.train)  # the same Adam, and the same implementation, as pruneexp
    n, bs = len(data.train_x), 60
    spe = n // bs

    @torch.inference_mode()
    def evaluate(x, y):
        model.eval()
        loss = sum(F.cross_entropy(model(x[i:i + 5000]), y[i:i + 5000], reduction="sum") for i in range(0, len(x), 5000))
        model.train()
        return float(loss) / len(x)

    best, best_weights = float("inf"), None
    t0 = now()
    order = torch.randperm(n)
    for step in range(iters):
        epoch, i = divmod(step, spe)
        if i == 0 and step:
            order = torch.randperm(n)
        idx = order[i * bs:(i + 1) * bs]
        loss = F.cross_entropy(model(data.train_x.index_select(0, idx)), data.train_y.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(weights, masks)
        if (step + 1) % 100 == 0 or step + 1 == iters:
            val = evaluate(data.val_x, data.val_y)
            if val < best:
                best, best_weights = val, {k: v.clone() for k, v in model.state_dict().items()}
    evaluate(data.test_x, data.test_y)  # the final weights
    final = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_weights)
    evaluate(data.test_x, data.test_y)  # the early-stop weights
    model.load_state_dict(final)
    return 1000.0 * (now() - t0) / iters


def floor_ms(reps: int = 2000) -> float:
    """ms of the training step's matrix products alone at LeNet-300-100's shapes, batch 60."""
    dims, bs = [784, 300, 100, 10], 60
    xs = [torch.randn(bs, d) for d in dims]
    ws = [torch.randn(dims[i + 1], dims[i]) for i in range(3)]
    def step():
        for i in range(3):
            xs[i] @ ws[i].T  # forward
            xs[i + 1].T @ xs[i]  # weight gradient
            if i:
                xs[i + 1] @ ws[i]  # input gradient (none for the first layer)
    for _ in range(50):
        step()
    t0 = now()
    for _ in range(reps):
        step()
    return 1000.0 * (now() - t0) / reps


def baseline_ms(checkout: str, iters: int, clock: str) -> float:
    """`pruneexp_ms` of another checkout's runner, in a subprocess with that checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": checkout}
    out = subprocess.run([sys.executable, __file__, "--iters", str(iters), "--runner-only", "--clock", clock], env=env, cwd=tempfile.gettempdir(),
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default=None, help="another checkout whose runner is timed the same way")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for pruneexp and the hand-written loop (not the baseline), e.g. train.optimizer_impl=foreach")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                        help="wall time, or the CPU time of the (single) timing thread on a shared machine")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures and their goals (for bench_all.py)")
    parser.add_argument("--runner-only", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    use_clock(opts.clock)
    EXTRA.extend(opts.set)
    torch.set_num_threads(1)
    if opts.runner_only:
        print(f"{pruneexp_ms(opts.iters):.4f}")
        return
    ours, hand, floor, base = [], [], [], []
    for _ in range(opts.repeats):  # interleaved, so machine load hits all of them alike
        if opts.baseline:
            base.append(baseline_ms(opts.baseline, opts.iters, opts.clock))
        ours.append(pruneexp_ms(opts.iters))
        torch.set_num_threads(1)
        hand.append(hand_ms(opts.iters))
        floor.append(floor_ms())
    o, h, f = (statistics.median(v) for v in (ours, hand, floor))
    print(f"one lth_lenet level, {opts.iters} iterations, 1 thread, {opts.clock} clock, median of {opts.repeats}" + (f"; {' '.join(opts.set)}" if opts.set else ""))
    print(f"  pruneexp runner    {o:6.3f} ms/it   (runs: {', '.join(f'{v:.3f}' for v in ours)})")
    print(f"  hand-written loop  {h:6.3f} ms/it   (runs: {', '.join(f'{v:.3f}' for v in hand)})")
    print(f"  FLOP floor         {f:6.3f} ms/it   (matrix products only)")
    print(f"  pruneexp / hand = {o / h:.2f}   pruneexp / floor = {o / f:.2f}")
    what = f"one lth_lenet level, {opts.iters} iterations, {opts.clock} clock"
    figures = [Figure(f"{what}: pruneexp / hand-written loop", o / h, "<= 1.1", "issue 9", f"{o:.3f} vs {h:.3f} ms/it, median of {opts.repeats}"),
               Figure(f"{what}: pruneexp / FLOP floor", o / f, None, "none stated (issue 9 asks it printed)", f"{o:.3f} vs {f:.3f} ms/it")]
    if base:
        b = statistics.median(base)
        print(f"  baseline runner    {b:6.3f} ms/it   ({opts.baseline}; runs: {', '.join(f'{v:.3f}' for v in base)})")
        print(f"  pruneexp / baseline = {o / b:.2f}")
        figures.append(Figure(f"{what}: pruneexp / baseline runner", o / b, "<= 0.6", "issue 9 (baseline: the code before it)",
                              f"{o:.3f} vs {b:.3f} ms/it; baseline {opts.baseline}"))
    if opts.json:
        write_json(opts.json, "bench_level", torch.get_num_threads(), figures)


if __name__ == "__main__":
    main()
