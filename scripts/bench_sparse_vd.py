"""Sparse variational dropout's training step with log α computed once per step (the forward's
`_Moments` hands it to the KL: pruneexp's code) against twice (the KL computing it again from θ and
log σ², as before e930a97), on the sparse_vd_lenet reproduction's LeNet-5-Caffe setup.

Both variants run pruneexp's own `train()` for `--steps` steps of the reproduction's config (MNIST
resident, batch 100, Adam, its threads), the KL weight on from the first step (the recipe's KL is
0 for its first 5 epochs, then on for the 195 others; `regularizer.kl_warmup_start=0it
kl_warmup=1it` here, so every timed step computes it); evaluation left out (one-example val/test
splits). The variants alternate in one process, `--rounds` times each after a warm-up round, the
first of a pair alternating too, so machine load hits both alike; the median per-step wall and CPU
time (the process's: the work done, steadier than wall time on a shared machine) of each and their
ratios are printed, with the machine's load average (`os.getloadavg`, as `uptime`).

It also checks what the two variants compute: the loss of the first step bit for bit, and the
gradients (equal up to the order of two floating-point additions, see the output).

    python scripts/bench_sparse_vd.py [--steps 40] [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from pruneexp.conf_store import register_configs
from pruneexp.data import DataSplits, load_data
from pruneexp.models import model_from_config
from pruneexp.pruning.masks import MaskSet, prunable_weights
from pruneexp.regularizers import REGULARIZERS
from pruneexp.regularizers.sparse_vd import LayerSVD, _KLSum
from pruneexp.train import steps_per_epoch, train
from pruneexp.train.task import TASKS
from pruneexp.validate import typed_config

CONF = Path(__file__).resolve().parents[1] / "conf"
SETUP = ["experiment=sparse_vd_lenet", "model=lenet5_caffe", "model.conv_relu=true", "model.init='conv:glorot_uniform,linear:normal'",
         "train.milestones=[]", "hardware.threads=2", "regularizer.kl_warmup_start=0it", "regularizer.kl_warmup=1it"]
ONCE = LayerSVD.kl


def kl_twice(self: LayerSVD) -> torch.Tensor:
    """The KL at log α computed again from the parameters (the forward's is dropped)."""
    self._step_log_alpha = None
    return _KLSum.apply(self.log_alpha)


def setup(cfg, data, steps):
    torch.manual_seed(cfg.seed)
    model = model_from_config(cfg.model, data.input_shape, data.num_classes)
    prunable = prunable_weights(model, cfg.prune.layer_types, cfg.prune.exclude)
    masks = MaskSet.dense(prunable)  # before wrapping, as schedule=regularized does
    svd = REGULARIZERS.get("sparse_vd")(cfg.regularizer)
    svd.wrap(model, prunable, len(data.train_x), steps_per_epoch(data, cfg.train.batch_size))
    train_cfg = cfg.train.copy()
    train_cfg.duration, train_cfg.eval_every = f"{steps}it", f"{steps}it"
    return model, masks, svd, train_cfg


def run(variant, cfg, data, steps) -> tuple[float, float]:
    """(wall, CPU) seconds per step of `steps` steps of train() with the KL's log α computed
    `variant`. The process's CPU time counts the work done, whatever else the machine runs."""
    LayerSVD.kl = ONCE if variant == "once" else kl_twice
    model, masks, svd, train_cfg = setup(cfg, data, steps)
    t0, c0 = time.perf_counter(), time.process_time()
    train(model, data, masks, train_cfg, seed=cfg.seed, task=TASKS.get(data.task), sparsifier=svd, quiet=True)
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def first_step(variant, cfg, data):
    """The loss and the gradients of the first training step (the KL weight on)."""
    LayerSVD.kl = ONCE if variant == "once" else kl_twice
    model, _, svd, train_cfg = setup(cfg, data, 1)
    model.train()
    torch.manual_seed(1)
    x, y = data.train_x[: train_cfg.batch_size], data.train_y[: train_cfg.batch_size]
    loss = TASKS.get(data.task).loss(model(x), y) + svd.penalty(model, 10)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="default: the setup's hardware.threads (2)")
    args = parser.parse_args()
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = typed_config(compose("config", overrides=SETUP))
    torch.set_num_threads(args.threads or cfg.hardware.threads)
    full = load_data(cfg.dataset, "cpu")
    data = DataSplits(name=full.name, train_x=full.train_x, train_y=full.train_y, val_x=full.val_x[:1], val_y=full.val_y[:1],
                      test_x=full.test_x[:1], test_y=full.test_y[:1], num_classes=full.num_classes, input_shape=full.input_shape)

    (loss1, g1), (loss2, g2) = first_step("once", cfg, data), first_step("twice", cfg, data)
    diff = max(float((g1[n] - g2[n]).abs().max() / g2[n].abs().max().clamp_min(1e-30)) for n in g1)
    same = [n for n in g1 if torch.equal(g1[n], g2[n])]
    print(f"first step: loss equal bit for bit: {torch.equal(loss1, loss2)} ({loss1.item():.10g}); gradients equal bit for bit "
          f"in {len(same)} of {len(g1)} tensors, largest difference {diff:.2e} of the tensor's largest entry")

    times: dict[str, list[tuple[float, float]]] = {"once": [], "twice": []}
    load = [os.getloadavg()[0]]
    for r in range(args.rounds + 1):  # round 0 warms up and is not counted
        for variant in (("once", "twice") if r % 2 else ("twice", "once")):
            t = run(variant, cfg, data, args.steps)
            if r:
                times[variant].append(t)
        load.append(os.getloadavg()[0])
    LayerSVD.kl = ONCE
    print(f"LeNet-5-Caffe / MNIST, sparse VD, batch {cfg.train.batch_size}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.steps} steps x {args.rounds} rounds per variant; load average (1 min) {min(load):.2f}-{max(load):.2f}")
    med = {}
    for variant, label in (("once", "log α once (pruneexp) "), ("twice", "log α twice (KL again)")):
        wall, cpu = [t[0] for t in times[variant]], [t[1] for t in times[variant]]
        med[variant] = statistics.median(wall), statistics.median(cpu)
        print(f"{label}: median {med[variant][0] * 1e3:.1f} ms wall, {med[variant][1] * 1e3:.1f} ms CPU a step  "
              f"[wall {', '.join(f'{t * 1e3:.1f}' for t in wall)}; CPU {', '.join(f'{t * 1e3:.1f}' for t in cpu)}]")
    print(f"ratio once / twice: wall {med['once'][0] / med['twice'][0]:.3f}, CPU {med['once'][1] / med['twice'][1]:.3f}")

if __name__ == "__main__":
    main()
