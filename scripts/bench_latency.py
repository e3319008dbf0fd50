"""CPU latency benchmark of pruned forms against dense (issue #5), through pruneexp.measure.

A. A large MLP (input 4096, two hidden 4096-wide linear layers, 10 classes), layerwise magnitude
   pruning to 50/80/90/95/98 % unstructured sparsity: CSR vs dense at batch 1 and 64.
B. ResNet-20 and VGG-11 (CIFAR shapes, 3x32x32) channel-pruned to 30/50/70 % of the channels of
   every coupled channel group (L1 norm of the group's filters; residual-coupled channels pruned
   consistently across the whole group), masks made by the channel-mask convention: shrunk vs dense,
   measured speedup beside the FLOP ratio.

Every form is checked against the masked model before it is timed (pruneexp.measure.latency).
Weights are random (initialisation), which does not change the timing of dense or shrunk forms and
gives CSR a uniformly random sparsity pattern. Writes results/benchmarks/latency_cpu.{csv,md}.
No speedup goal is stated (issue 5 asks each figure beside its FLOP-ratio ideal, and the table to
say where a form is slower than dense); `--json` gives each speedup with its ideal.

    python scripts/bench_latency.py [--threads 1] [--quick] [--out results/benchmarks] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch_pruning as tp
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchgoals import Figure, load_average, write_json  # noqa: E402

from pruneexp.measure.flops import count_layer_flops, masked_flops  # noqa: E402
from pruneexp.measure.latency import Target, measure_level  # noqa: E402
from pruneexp.measure.timing import Protocol  # noqa: E402
from pruneexp.models import create_model  # noqa: E402
from pruneexp.pruning.masks import MaskSet, prunable_weights  # noqa: E402
from pruneexp.pruning.shrink import NORMS, PRODUCERS  # noqa: E402


def unstructured_masks(model: nn.Module, sparsity: float) -> MaskSet:
    """Layerwise magnitude pruning (Han et al. 2015) of every linear weight to `sparsity`: keep the
    weights above the layer's `sparsity`-quantile of |w| (a k-th value threshold; the selector's
    float64 argsort of 16M scores per layer would dominate the benchmark's time)."""
    masks = {}
    for n, p in prunable_weights(model).items():
        a = p.detach().abs().flatten()
        k = int(round(sparsity * a.numel()))
        masks[n] = (a > a.kthvalue(k).values).view_as(p) if k else torch.ones_like(p, dtype=torch.bool)
    return MaskSet(masks)


def channel_masks(model: nn.Module, fraction: float, input_shape: tuple[int, ...]) -> MaskSet:
    """Channel masks by the channel-mask convention: in every torch-pruning group (classifier outputs
    excluded) the `fraction` of channels with the smallest summed L1 norm of the producers' filters
    has its weight rows, biases and BatchNorm scale and shift masked in every producer of the group."""
    params = prunable_weights(model)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    names = {m: n for n, m in model.named_modules()}
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *input_shape))
    for group in dg.get_all_groups(ignored_layers=[classifier], root_module_types=list(PRODUCERS)):
        producers = [(dep.target.module, idxs) for dep, idxs in group._group
                     if dg.is_out_channel_pruning_fn(dep.handler) and isinstance(dep.target.module, PRODUCERS + NORMS)]
        n = len(group._group[0][1])
        score = torch.zeros(n)
        for module, idxs in producers:
            if isinstance(module, PRODUCERS):
                score += module.weight.detach().abs().flatten(1).sum(1)[torch.as_tensor(idxs)]
        drop = torch.argsort(score)[: int(round(fraction * n))]
        for module, idxs in producers:
            idx = torch.as_tensor(idxs)[drop]
            name = names[module]
            for pname in ("weight", "bias"):
                p = getattr(module, pname, None)
                if p is None:
                    continue
                key = f"{name}.{pname}"
                m = masks.setdefault(key, torch.ones_like(p, dtype=torch.bool))
                m[idx] = False
    return MaskSet(masks, list(params))


def run_model(label, model, input_shape, levels, make_masks, forms, target, rows):
    """Mask `model` at each sparsity in `levels` and append its latency rows (pruneexp.measure) to `rows`."""
    flops = count_layer_flops(model, input_shape, list(prunable_weights(model)))
    for s in levels:
        t0 = time.perf_counter()
        masks = make_masks(model, s)
        ratio = masked_flops(flops, masks) / flops.total
        got = measure_level(model, masks, input_shape, target, level=int(round(100 * s)), name=label, flop_ratio=ratio)
        for r in got:
            r["model"], r["target_sparsity"] = label, s
        rows.extend(got)
        print(f"{label} {s:.0%}: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)


def summarise(rows: list[dict]) -> pd.DataFrame:
    """One line per (model, sparsity, batch): dense and form medians, speedup, FLOP ratio, verdict."""
    df = pd.DataFrame(rows)
    out = []
    for (model, s, b), g in df.groupby(["model", "target_sparsity", "batch_size"], sort=False):
        dense = g[g.form == "dense"].iloc[0]
        for _, r in g[g.form != "dense"].iterrows():
            ok = r["status"] == "ok"
            flop_ratio = r["form_flop_ratio"] if r["form"] == "shrunk" else r["flop_ratio"]
            speedup = r["speedup_vs_dense"] if ok else None
            verdict = r["status"] if not ok else (f"{r['form']} SLOWER than dense" if speedup < 1 else f"{r['form']} faster")
            out.append({"model": model, "pruned": f"{s:.0%}", "batch": int(b), "form": r["form"],
                        "dense ms": dense["median_ms"], "dense CV": dense["cv"],
                        "form ms": r["median_ms"] if ok else None, "form CV": r["cv"] if ok else None,
                        "speedup": speedup, "FLOP ratio": flop_ratio,
                        "FLOP speedup (ideal)": 1 / flop_ratio if flop_ratio else None,
                        "equiv. err": r["equivalence_error"], "verdict": verdict})
    return pd.DataFrame(out)


def main() -> None:
    """Run parts A and B, write latency_cpu.csv (every row) and latency_cpu.md (the summary table)."""
    load_before = load_average()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny protocol and one level each (smoke test)")
    ap.add_argument("--out", default="results/benchmarks")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write each speedup beside its FLOP ideal (for bench_all.py)")
    args = ap.parse_args()
    protocol = Protocol(warmup=2, min_reps=3, min_time_s=0.0) if args.quick else Protocol(warmup=3, min_reps=10, min_time_s=0.5)
    started = time.perf_counter()

    def target(forms, batch_sizes):
        """The CPU target of this benchmark: fp32, fixed threads, the protocol above."""
        return Target(device=torch.device("cpu"), dtype=torch.float32, threads=args.threads, batch_sizes=batch_sizes,
                      forms=forms, protocol=protocol, tolerance=1e-4)

    rows: list[dict] = []
    torch.manual_seed(0)
    mlp = create_model("mlp", (4096,), 10, widths=[4096, 4096]).eval()
    mlp_levels = [0.9] if args.quick else [0.5, 0.8, 0.9, 0.95, 0.98]
    run_model("MLP 4096x4096x2", mlp, (4096,), mlp_levels, unstructured_masks, ("dense", "csr"), target(("dense", "csr"), (1, 64)), rows)

    conv_levels = [0.5] if args.quick else [0.3, 0.5, 0.7]
    for name, batches in (("resnet20", (1, 64)), ("vgg11", (1, 16))):
        torch.manual_seed(0)
        model = create_model(name, (3, 32, 32), 10).eval()
        run_model(name, model, (3, 32, 32), conv_levels, lambda m, s: channel_masks(m, s, (3, 32, 32)),
                  ("dense", "shrunk"), target(("dense", "shrunk"), batches), rows)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "latency_cpu.csv", index=False)
    table = summarise(rows)
    r0 = rows[0]
    header = (f"# CPU latency: pruned forms vs dense\n\n"
              f"command: `python scripts/bench_latency.py --threads {args.threads}{' --quick' if args.quick else ''}`  \n"
              f"machine: {r0['machine']}, {r0['device_name']}, {torch.get_num_threads()} cores visible to torch, "
              f"threads used {r0['threads']}, dtype {r0['dtype']}, torch {r0['torch']}, python {platform.python_version()}  \n"
              f"protocol: {protocol.warmup} warm-up calls, then timed calls until >= {protocol.min_reps} calls and "
              f">= {protocol.min_time_s}s; median (CV = std/mean of the per-call samples); torch.inference_mode  \n"
              f"speedup = dense median / form median at the same batch; FLOP ratio = form FLOPs / dense FLOPs "
              f"(CSR: the effective ratio, density-weighted; shrunk: counted on the shrunk model)  \n"
              f"wall time of the whole benchmark: {time.perf_counter() - started:.0f}s; "
              f"1-minute load average before/after: {load_before}/{load_average()} on {os.cpu_count()} cores\n\n")
    md = markdown(table)
    (out / "latency_cpu.md").write_text(header + md + "\n")
    print(header + md)
    if args.json:
        write_json(args.json, "bench_latency", args.threads, figures(table))


def figures(table: pd.DataFrame) -> list[Figure]:
    """Each form's speedup over dense (dense median / form median, same batch), no goal stated;
    None where the form did not run (its status says why)."""
    out = []
    for r in table.to_dict("records"):
        speedup, ideal = r["speedup"], r["FLOP speedup (ideal)"]
        out.append(Figure(f"latency {r['model']} {r['pruned']} batch {r['batch']}: {r['form']} speedup vs dense",
                          None if pd.isna(speedup) else float(speedup), None, "none stated (issue 5)",
                          (f"FLOP ideal {ideal:.2f}x; " if not pd.isna(ideal) else "") + str(r["verdict"])))
    return out


def markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (4 significant digits; blank for missing values)."""
    def cell(v):
        if v is None or (isinstance(v, float) and v != v):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
