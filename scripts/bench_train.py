"""How much the runner's training loop costs over a minimal hand-written PyTorch loop.

LeNet-300-100 on MNIST, data resident in memory, the same batch size and optimizer for both;
the runner's loop trains with 90 % magnitude masks re-applied after every step (as in a pruned
run). The two alternate in one process, `--rounds` times each, so machine noise hits both alike;
the ratio of median epoch times is printed (target <= 1.15, issue 2).

Evaluation is left out of both: the validation and test splits handed to the runner's loop are a
single example, so the end-of-epoch evaluation costs nothing measurable.

    python scripts/bench_train.py [--batch-size 60] [--rounds 5] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchgoals import Figure, write_json  # noqa: E402

from pruneexp.config import DatasetConfig, TrainConfig  # noqa: E402
from pruneexp.data import DataSplits, load_data  # noqa: E402
from pruneexp.models import create_model  # noqa: E402
from pruneexp.pruning.masks import MaskSet, prunable_weights  # noqa: E402
from pruneexp.pruning.select import select  # noqa: E402
from pruneexp.train import epoch_order, steps_per_epoch, train  # noqa: E402


def minimal_epoch(model, x_all, y_all, bs, optimizer, order) -> None:
    """The reference: the shortest correct PyTorch training epoch on resident tensors."""
    for i in range(len(x_all) // bs):
        idx = order[i * bs : (i + 1) * bs]
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", default=os.environ.get("PRUNEEXP_DATA", "./data"))
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figure and its goal (for bench_all.py)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    full = load_data(OmegaConf.structured(DatasetConfig(name="mnist", root=args.data, download=False)), "cpu")
    data = DataSplits(name="mnist", train_x=full.train_x, train_y=full.train_y, val_x=full.val_x[:1], val_y=full.val_y[:1],
                      test_x=full.test_x[:1], test_y=full.test_y[:1], num_classes=10, input_shape=full.input_shape)
    cfg = OmegaConf.structured(TrainConfig(batch_size=args.batch_size, duration="1ep", eval_every="1ep", lr_schedule="constant", lr=0.05))

    torch.manual_seed(0)
    ours = create_model("lenet_300_100", data.input_shape, 10)
    weights = prunable_weights(ours)
    masks = select({n: p.detach().abs() for n, p in weights.items()}, 0.9, MaskSet.dense(weights))
    masks.apply_(ours)
    theirs = create_model("lenet_300_100", data.input_shape, 10)
    reference_opt = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    spe = steps_per_epoch(data, args.batch_size)

    ours_s, theirs_s = [], []
    for r in range(args.rounds + 1):  # round 0 warms both up and is not counted
        t0 = time.perf_counter()
        train(ours, data, masks, cfg, seed=r, quiet=True)
        t1 = time.perf_counter()
        minimal_epoch(theirs, data.train_x, data.train_y, args.batch_size, reference_opt, epoch_order(r, 0, len(data.train_x), data.train_x.device))
        t2 = time.perf_counter()
        if r:
            ours_s.append(t1 - t0)
            theirs_s.append(t2 - t1)
    ours_med, theirs_med = statistics.median(ours_s), statistics.median(theirs_s)
    print(f"LeNet-300-100 / MNIST, {spe} steps per epoch at batch {args.batch_size}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"pruneexp train() epoch (90% masks on): median {ours_med:.3f} s  [{', '.join(f'{t:.3f}' for t in ours_s)}]")
    print(f"minimal PyTorch loop epoch:            median {theirs_med:.3f} s  [{', '.join(f'{t:.3f}' for t in theirs_s)}]")
    print(f"ratio (pruneexp / minimal): {ours_med / theirs_med:.3f}  (target <= 1.15)")
    if args.json:
        write_json(args.json, "bench_train", torch.get_num_threads(), [Figure(
            "training epoch, LeNet-300-100/MNIST, 90 % masks: pruneexp train() / minimal loop", ours_med / theirs_med, "<= 1.15",
            "issue 2", f"{ours_med:.3f} vs {theirs_med:.3f} s, median of {args.rounds}")])


if __name__ == "__main__":
    main()
