"""Post-training pruning of a real model: pruneexp's blocks engine against the reference codes'
protocol, SparseGPT and Wanda on SmolLM2-135M at 50 %, on the same machine and calibration windows.

    ours       pruneexp's posttrain pruning (pruneexp.pruning.blocks + the sparsegpt / wanda criterion),
               calibration in batches of --batch-size
    reference  the reference codes' loop over the same captured block-0 inputs, driving the
               reference classes themselves: IST-DASLab/sparsegpt's `SparseGPT` (add_batch hooks,
               one calibration sample per block forward as their llama.py does, `fasterprune`),
               locuslab/wanda's `WrappedGPT` (lib/layerwrapper.py) with lib/prune.py's per-row
               selection restated below for timing (it is inline in their prune_wanda, which needs
               their C4 loader and an older transformers).

Each method runs in its own process (so its peak resident memory is its own) on --threads threads.
Printed: the pruning's wall time (statistics + algorithm), the algorithm alone (SparseGPT's
per-layer solve: ours `sparsegpt_prune`, theirs `fasterprune`), peak memory, the ratio ours /
reference (goal <= 1.0), and how many of the reference's mask entries ours agrees with.

    python scripts/bench_posttrain.py --reference-sparsegpt DIR --reference-wanda DIR [--json FILE]
    (fetch the two repositories first; the model comes from scripts/fetch_smollm2.py)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from benchgoals import Figure, write_json  # noqa: E402


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def calibration(model_dir: str, nsamples: int, seqlen: int, cache: str):
    from omegaconf import OmegaConf

    from pruneexp.config import DatasetConfig
    from pruneexp.data import load_data

    cfg = OmegaConf.structured(DatasetConfig(name="tokens"))
    cfg.update(dict(block_size=seqlen, nsamples=nsamples, tokenizer=model_dir, normalize=False, cache_dir=cache, eval_windows=1))
    return load_data(cfg, "cpu")


def ours(method: str, args: argparse.Namespace) -> dict:
    """pruneexp's posttrain pruning of every decoder linear at 50 %, the algorithm's time measured inside."""
    import torch
    from hydra import compose, initialize_config_dir

    from pruneexp.cli import CONF_DIR
    from pruneexp.conf_store import register_configs
    from pruneexp.pruning.criteria import sparsegpt as sg
    from pruneexp.schedules.context import RunContext
    from pruneexp.schedules.posttrain import prune_sequential
    from pruneexp.validate import typed_config

    register_configs()
    over = {"sparsegpt": ["criterion=sparsegpt", "prune.scope=layerwise"], "wanda": ["criterion=wanda", "prune.scope=row"]}[method]
    batches = -(-args.nsamples // args.batch_size)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["model=hf", f"model.path={args.model}", "dataset=tokens", f"dataset.block_size={args.seqlen}",
                                           f"dataset.nsamples={args.nsamples}", f"criterion.batches={batches}",
                                           f"criterion.batch_size={args.batch_size}", "schedule=posttrain", "schedule.train_dense=false",
                                           "sparsity=0.5", "quiet=true", f"dataset.cache_dir={args.cache}", *over])
    cfg = typed_config(cfg)
    data = calibration(args.model, args.nsamples, args.seqlen, args.cache)
    ctx = RunContext(cfg, data, torch.device("cpu"), quiet=True)
    model = ctx.build_model()
    solve = [0.0]
    inner = sg.sparsegpt_prune

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            solve[0] += time.perf_counter() - t

    sg.sparsegpt_prune = timed
    masks = ctx.dense_masks(model)
    t = time.perf_counter()
    masks = prune_sequential(ctx, model, masks, 0.5, engine="blocks")
    total = time.perf_counter() - t
    torch.save({n: masks[n] for n in masks.weights}, Path(args.scratch) / f"ours_{method}.pt")
    return dict(total_s=total, algorithm_s=solve[0] if method == "sparsegpt" else None)


def reference(method: str, args: argparse.Namespace) -> dict:
    """The reference codes' per-block loop around their own classes, on the same block-0 inputs."""
    import torch
    from torch import nn

    from pruneexp.models.hf import hf
    from pruneexp.pruning.blocks import BlockInput, block_list, first_block_inputs, run_block

    if method == "sparsegpt":
        sys.path.insert(0, args.reference_sparsegpt)
        if not torch.cuda.is_available():
            torch.cuda.synchronize = lambda *a, **k: None  # fasterprune synchronizes CUDA unconditionally
        from sparsegpt import SparseGPT as Wrapper  # noqa: E402
    else:
        sys.path.insert(0, str(Path(args.reference_wanda) / "lib"))
        from layerwrapper import WrappedGPT as Wrapper  # noqa: E402
    data = calibration(args.model, args.nsamples, args.seqlen, args.cache)
    model = hf((args.seqlen,), data.num_classes, path=args.model)
    model.eval()
    names = [n for n, p in model.named_parameters() if p.dim() == 2 and ".layers." in n]
    _, blocks = block_list(model, names)
    samples = [(data.train_x[j:j + 1], None) for j in range(args.nsamples)]  # the references run one sample at a time
    t = time.perf_counter()
    inputs = first_block_inputs(model, blocks[0], iter(samples), torch.device("cpu"))
    solve, masks = 0.0, {}
    for i, block in enumerate(blocks):
        subset = {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}
        wrapped = {n: Wrapper(m) for n, m in subset.items()}
        handles = [m.register_forward_hook(lambda mod, inp, out, n=n: wrapped[n].add_batch(inp[0].data, out.data))
                   for n, m in subset.items()]
        with torch.no_grad():
            for inp in inputs:
                run_block(block, inp)
        for h in handles:
            h.remove()
        for n, m in subset.items():
            s = time.perf_counter()
            if method == "sparsegpt":
                wrapped[n].fasterprune(0.5, prunen=0, prunem=0, blocksize=128, percdamp=0.01)
                keep = m.weight.data != 0
            else:  # lib/prune.py's unstructured selection, restated: the lowest half of |W| sqrt(scaler_row) per row
                metric = torch.abs(m.weight.data) * torch.sqrt(wrapped[n].scaler_row.reshape((1, -1)))
                order = torch.sort(metric, dim=-1, stable=True)[1][:, :int(metric.shape[1] * 0.5)]
                pruned = torch.zeros_like(metric, dtype=torch.bool).scatter_(1, order, True)
                m.weight.data[pruned] = 0
                keep = ~pruned
            solve += time.perf_counter() - s
            masks[f"model.model.layers.{i}.{n}.weight"] = keep
        with torch.no_grad():
            inputs = [BlockInput(run_block(block, inp), inp.args, inp.kwargs) for inp in inputs]
    total = time.perf_counter() - t
    torch.save(masks, Path(args.scratch) / f"reference_{method}.pt")
    return dict(total_s=total, algorithm_s=solve if method == "sparsegpt" else None)


def gpt8(args: argparse.Namespace) -> dict:
    """pruneexp's own 8-block GPT (256 wide), Wanda on 8 x 32 sequences of 128 tokens: the block-by-block
    protocol (blocks engine), the old protocol (the whole model run once per block) and every layer
    scored in one pass on the dense model (schedule.sequential=false), each timed --repeats + 1 times,
    interleaved, best kept."""
    import torch
    from hydra import compose, initialize_config_dir

    from pruneexp.cli import CONF_DIR
    from pruneexp.conf_store import register_configs
    from pruneexp.data import load_data
    from pruneexp.schedules.context import RunContext
    from pruneexp.schedules.posttrain import prune_sequential
    from pruneexp.validate import typed_config

    torch.set_num_threads(args.threads)
    register_configs()
    base = ["dataset=markov", "dataset.block_size=128", "dataset.train_size=512", "dataset.val_size=32", "dataset.test_size=32",
            "model=gpt", "model.n_layer=8", "model.n_embd=256", "model.n_head=4", "schedule=posttrain", "schedule.train_dense=false",
            "criterion=wanda", "prune.scope=row", "criterion.batches=8", "criterion.batch_size=32", "sparsity=0.5", "quiet=true"]
    protocols = {}
    for label, extra, engine in (("one pass", ["schedule.sequential=false"], "auto"), ("blocks", [], "blocks"), ("whole model per block", [], "model")):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = typed_config(compose("config", overrides=[*base, *extra]))
        protocols[label] = (RunContext(cfg, load_data(cfg.dataset, "cpu"), torch.device("cpu"), quiet=True), engine)
    every = {label: [] for label in protocols}
    for _ in range(args.repeats + 1):  # interleaved, so a change of the machine's load hits each protocol alike
        for label, (ctx, engine) in protocols.items():
            model = ctx.build_model()
            t = time.perf_counter()
            prune_sequential(ctx, model, ctx.dense_masks(model), 0.5, engine=engine)
            every[label].append(time.perf_counter() - t)
    print("8-block GPT, every repeat (s): " + "; ".join(f"{k} " + " ".join(f"{t:.2f}" for t in v) for k, v in every.items()), flush=True)
    return {label: min(v) for label, v in every.items()}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    side, method = args.child.split(":")
    out = (ours if side == "ours" else reference)(method, args)
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(out))


def run_child(spec: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", spec, *sys.argv[1:]]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def agreement(a: dict, b: dict) -> float:
    import torch

    same = sum(int((a[n] == b[n]).sum()) for n in b)
    return same / sum(t.numel() for t in b.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="SmolLM2 directory (default: fetched into $PRUNEEXP_CACHE)")
    ap.add_argument("--reference-sparsegpt", default=os.environ.get("PRUNEEXP_REF_SPARSEGPT", ""),
                    help="a checkout of IST-DASLab/sparsegpt (default $PRUNEEXP_REF_SPARSEGPT)")
    ap.add_argument("--reference-wanda", default=os.environ.get("PRUNEEXP_REF_WANDA", ""),
                    help="a checkout of locuslab/wanda (default $PRUNEEXP_REF_WANDA)")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=1,
                    help="ours: calibration sequences per block forward (1, as the references run them; on a CPU also "
                         "the fastest, each sequence's activations staying in cache)")
    ap.add_argument("--repeats", type=int, default=1, help="each side this many times, interleaved; the fastest kept")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default="sparsegpt,wanda")
    ap.add_argument("--json", default="", help="also write the figures and goals here (scripts/benchgoals.py, for make bench)")
    ap.add_argument("--gpt8", action="store_true", help="only the 8-block GPT measurement (blocks vs one pass; goal <= 1.5x)")
    ap.add_argument("--no-gpt8", action="store_true", help="skip the 8-block GPT measurement")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--scratch", default="", help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=os.environ.get("PRUNEEXP_CACHE", str(Path.home() / ".cache" / "pruneexp")))
    args = ap.parse_args()
    figures = []
    if args.gpt8:
        figures.append(gpt8_figure(args))
        finish(args, figures)
        return
    if args.model is None:
        from pruneexp.fetch import smollm2

        args.model = str(smollm2(args.cache))
        sys.argv += ["--model", args.model]
    if not args.scratch:
        import tempfile

        args.scratch = tempfile.mkdtemp(prefix="bench_posttrain_")
        sys.argv += ["--scratch", args.scratch]
    if args.child:
        child(args)
        return
    import platform

    import torch

    print(f"SmolLM2-135M, {args.nsamples} x {args.seqlen} calibration tokens, ours in batches of {args.batch_size}, 50 % of every "
          f"decoder linear, {args.threads} thread(s), best of {args.repeats}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {load()}")
    rows = []
    for method in args.methods.split(","):
        ref_dir = args.reference_sparsegpt if method == "sparsegpt" else args.reference_wanda
        mine, theirs = None, None
        for _ in range(args.repeats):  # interleaved, the fastest of each kept: a load change hits both sides
            m = run_child(f"ours:{method}", args)
            mine = m if mine is None or m["total_s"] < mine["total_s"] else mine
            if ref_dir:
                t = run_child(f"reference:{method}", args)
                theirs = t if theirs is None or t["total_s"] < theirs["total_s"] else theirs
        row = dict(method=method, ours=mine, reference=theirs)
        if theirs:
            row["ratio_total"] = mine["total_s"] / theirs["total_s"]
            if mine["algorithm_s"] is not None:
                row["ratio_algorithm"] = mine["algorithm_s"] / theirs["algorithm_s"]
            row["mask_agreement"] = agreement(torch.load(Path(args.scratch) / f"ours_{method}.pt"),
                                              torch.load(Path(args.scratch) / f"reference_{method}.pt"))
        rows.append(row)
        line = f"{method:9s} ours {mine['total_s']:7.1f} s"
        if mine["algorithm_s"] is not None:
            line += f" (algorithm {mine['algorithm_s']:.1f} s)"
        line += f", peak {mine['peak_rss_gib']:.2f} GiB"
        if theirs:
            line += f" | reference {theirs['total_s']:7.1f} s"
            if theirs["algorithm_s"] is not None:
                line += f" (algorithm {theirs['algorithm_s']:.1f} s)"
            line += f", peak {theirs['peak_rss_gib']:.2f} GiB | ratio {row['ratio_total']:.2f}"
            if "ratio_algorithm" in row:
                line += f" (algorithm {row['ratio_algorithm']:.2f})"
            line += f" [goal <= 1.0: {'holds' if row['ratio_total'] <= 1.0 else 'MISSED'}] | masks agree {100 * row['mask_agreement']:.2f} %"
        print(line, flush=True)
    for row in rows:
        theirs = row["reference"]
        for what, key in (("pruning (statistics + algorithm)", "ratio_total"), ("the algorithm alone", "ratio_algorithm")):
            if what.startswith("the algorithm") and row["ours"]["algorithm_s"] is None:
                continue
            figures.append(Figure(f"{row['method']} on SmolLM2-135M at 50 %, {what}: ours / reference", row.get(key),
                                  "<= 1.0", "issue 24",
                                  f"ours {row['ours']['total_s']:.1f} s, peak {row['ours']['peak_rss_gib']:.2f} GiB"
                                  + (f"; reference {theirs['total_s']:.1f} s, masks agree {100 * row['mask_agreement']:.2f} %"
                                     if theirs else "; no reference checkout given (--reference-sparsegpt / --reference-wanda)")))
    if not args.no_gpt8:
        figures.append(gpt8_figure(args))
    finish(args, figures)


def gpt8_figure(args: argparse.Namespace) -> "Figure":
    t = gpt8(args)
    ratio = t["blocks"] / t["one pass"]
    print(f"8-block GPT (256 wide), Wanda, 8 x 32 x 128 calibration tokens, {args.threads} thread(s): one pass {t['one pass']:.2f} s, "
          f"blocks {t['blocks']:.2f} s, whole model per block {t['whole model per block']:.2f} s; blocks / one pass {ratio:.2f} "
          f"[goal <= 1.5: {'holds' if ratio <= 1.5 else 'MISSED'}] ({load()})", flush=True)
    return Figure("8-block GPT, Wanda: block by block / every layer in one pass", ratio, "<= 1.5", "issue 24",
                  f"one pass {t['one pass']:.2f} s, blocks {t['blocks']:.2f} s, whole model per block {t['whole model per block']:.2f} s")


def finish(args: argparse.Namespace, figures: list) -> None:
    if args.json:
        write_json(args.json, "bench_posttrain", args.threads, figures)


if __name__ == "__main__":
    main()
