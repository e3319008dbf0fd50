"""Selection micro-benchmark: `top_k_mask` (the selector's top-k, pruning/select.py) on LeNet-300-100's
266 200 float64 scores, one thread, against the implementation before issue 28 (numpy's
introselect over every score, kept here as `partition_top_k`) and a stable sort, in one process.

Cases (k = n_to_keep(n, 0.8) = 53 240 kept, as a gmp update at 80 % would keep):
  random       N(0, 1) scores;
  75 % -inf    200 000 of them -inf at random places (the already-pruned weights of gmp's later
               updates and of dynamic sparse training; issue 28's case: 6.5 ms -> 50 ms before);
  75 % zeros   200 000 of them 0.0 (equal finite scores: regrown weights at zero);
  descending   the random scores sorted high to low (the worst case of a plain quickselect).
Every method's mask is checked equal to the stable sort's before it is timed.

Goal (issue 28, "selection that stays linear whatever the ties"): on each tied or sorted case,
top_k_mask takes at most the time it takes on random scores of the same size (ratio <= 1.0).

    python scripts/bench_select.py [--repeats 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchgoals import Figure, write_json  # noqa: E402

from pruneexp.pruning.select import n_to_keep, top_k_mask  # noqa: E402

N = 784 * 300 + 300 * 100 + 100 * 10  # LeNet-300-100's prunable weights
TIED = ("75 % -inf", "75 % zeros", "descending")


def partition_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """top_k_mask as it was before issue 28 (70a3a3e): the k-th value by np.partition over all
    scores, then the ties in index order."""
    n = scores.numel()
    if k >= n:
        keep = torch.ones_like(scores, dtype=torch.bool)
    elif k <= 0:
        keep = torch.zeros_like(scores, dtype=torch.bool)
    else:
        v = float(np.partition(scores.detach().cpu().numpy().ravel(), n - k)[n - k])
        keep = scores > v
        ties = (scores == v).nonzero().flatten()[: k - int(keep.sum())]
        keep[ties] = True
    return keep & torch.isfinite(scores)


def stable_sort_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The rule both keep: the first k of a stable descending sort, finite entries only."""
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[order[:k]] = True
    return keep & torch.isfinite(scores)


METHODS = {"before": partition_top_k, "after": top_k_mask, "stable sort": stable_sort_top_k}


def cases(seed: int = 0) -> dict[str, torch.Tensor]:
    """The score vectors of the module docstring."""
    g = torch.Generator().manual_seed(seed)
    random = torch.randn(N, generator=g, dtype=torch.float64)
    pruned = torch.randperm(N, generator=g)[:200_000]
    inf, zeros = random.clone(), random.clone()
    inf[pruned] = float("-inf")
    zeros[pruned] = 0.0
    return {"random": random, "75 % -inf": inf, "75 % zeros": zeros, "descending": random.sort(descending=True).values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls of each method on each case (interleaved)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures and their goals (for bench_all.py)")
    opts = parser.parse_args()
    torch.set_num_threads(1)
    k = n_to_keep(N, 0.8)
    ms: dict[tuple[str, str], list[float]] = {}
    for case, s in cases().items():
        want = stable_sort_top_k(s, k)
        for name, f in METHODS.items():
            if not torch.equal(f(s, k), want):
                sys.exit(f"{name} keeps another set than the stable sort on {case}")
        for _ in range(opts.repeats):  # interleaved: machine load hits every method alike
            for name, f in METHODS.items():
                t0 = time.perf_counter()
                f(s, k)
                ms.setdefault((case, name), []).append(1000 * (time.perf_counter() - t0))
    med = {key: statistics.median(v) for key, v in ms.items()}
    print(f"top_k_mask on {N} float64 scores, k = {k}, {torch.get_num_threads()} thread, median of {opts.repeats} (ms)")
    print(f"  {'case':12s} {'before':>8s} {'after':>8s} {'stable sort':>12s}  after/before")
    for case in cases():
        b, a, s = (med[case, m] for m in METHODS)
        print(f"  {case:12s} {b:8.2f} {a:8.2f} {s:12.2f}  {a / b:.2f}")
    base = med["random", "after"]
    figures = [Figure(f"top_k_mask, {case} / random scores", med[case, "after"] / base, "<= 1.0",
                      "issue 28 (linear whatever the ties)",
                      f"{med[case, 'after']:.2f} vs {base:.2f} ms; before issue 28 {med[case, 'before']:.2f} vs {med['random', 'before']:.2f} ms")
               for case in TIED]
    figures += [Figure(f"top_k_mask after / before issue 28, {case}", med[case, "after"] / med[case, "before"], None,
                       "none stated (issue 28 asks the before and after)",
                       f"{med[case, 'after']:.2f} vs {med[case, 'before']:.2f} ms") for case in ("random", "75 % -inf")]
    for f in figures:
        print(f"  {f.figure}: {f.value:.2f}" + (f" (goal {f.goal}: {'holds' if f.holds() else 'MISSED'})" if f.goal else ""))
    if opts.json:
        write_json(opts.json, "bench_select", torch.get_num_threads(), figures)


if __name__ == "__main__":
    main()
