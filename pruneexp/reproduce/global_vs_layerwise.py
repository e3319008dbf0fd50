"""Blalock, Gonzalez Ortiz, Frankle & Guttag 2020, "What is the State of Neural Network Pruning?"
(ShrinkBench), Figs. 5-6: global magnitude pruning beats layerwise magnitude pruning at high
compression, with fine-tuning.

Setups: LeNet-5 on Fashion-MNIST, trained dense once per seed (shared), pruned once by weight
magnitude to compression c = 2, 4, 8, 16, 32 (sparsity 1 - 1/c) over all layers together
(`prune.scope=global`) or every layer at the same sparsity (`prune.scope=layerwise`, ShrinkBench's
"layerwise"), then fine-tuned (`schedule.finetune`, 5 epochs). The number is the final test
accuracy after fine-tuning, mean over seeds.

Claims:
- global >= layerwise at every compression >= 16 (means compared as they are, no margin);
- reported without verdict: the theoretical speedup (dense FLOPs / FLOPs of the kept weights, from
  levels.csv) of each scope at each ratio; accuracy against it in accuracy_vs_flops_speedup.png
  (the second axis the paper asks every paper to report; accuracy against compression ratio is the
  report's accuracy_vs_sparsity.png).
Fast variant (CI): c = 16 and 32 only, 2 dense epochs and 1 fine-tuning epoch, one seed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from pruneexp import plots
from pruneexp.reproduce import Check, Reproduction, claim_check, register

RATIOS = (2, 4, 8, 16, 32)
HIGH = 16  # global >= layerwise from this compression on
SCOPES = ("global", "layerwise")


def setups(ratios: tuple[int, ...]) -> dict[str, list[str]]:
    return {f"{scope}/{c}x": [f"prune.scope={scope}", f"sparsity={1 - 1 / c}"] for c in ratios for scope in SCOPES}


def finals(runs: list[Path]) -> pd.DataFrame:
    """One row per run: scope, seed, compression (nominal), final test accuracy, FLOP speedup."""
    rows = []
    for run in runs:
        levels = pd.read_csv(run / "levels.csv")
        last = levels.iloc[-1]
        if last["name"] != "finetuned":
            continue
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        rows.append(dict(scope=cfg["prune"]["scope"], seed=cfg["seed"], ratio=round(1 / (1 - float(cfg["sparsity"]))),
                         remaining=1 - float(last["sparsity"]), test_acc=float(last["test_acc"]),
                         before=float(levels[levels["name"] == "pruned"]["test_acc"].iloc[0]),
                         speedup=float(last["dense_flops"]) / float(last["effective_flops"])))
    return pd.DataFrame(rows)


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def check_runs(runs: list[Path]) -> list[Check]:
    per_run = finals(runs)
    if per_run.empty:
        return [Check("fine-tuned runs on disk", "-", "none", "-", False)]
    mean = per_run.groupby(["ratio", "scope"]).agg(acc=("test_acc", "mean"), speedup=("speedup", "mean"), seeds=("seed", "nunique"))
    checks = []
    for c in sorted(per_run["ratio"].unique()):
        if c < HIGH:
            continue
        if (c, "global") not in mean.index or (c, "layerwise") not in mean.index:
            checks.append(Check(f"compression {c}x: global >= layerwise", "global > layerwise", "a scope is missing", "-", False))
            continue
        g, lw = mean.loc[(c, "global")], mean.loc[(c, "layerwise")]
        checks.append(claim_check(f"compression {c}x: global magnitude >= layerwise magnitude (fine-tuned, final test acc)",
                                  "global > layerwise at high compression (Figs. 5-6)",
                                  f"global {pct(g['acc'])}, layerwise {pct(lw['acc'])} (seeds: {int(g['seeds'])}, {int(lw['seeds'])})",
                                  "means compared as they are, no margin", bool(g["acc"] >= lw["acc"])))
    checks.append(Check("theoretical speedup (dense FLOPs / FLOPs of kept weights), global / layerwise",
                        "report accuracy against speedup too",
                        "; ".join(f"{c}x: " + " / ".join(f"{mean.loc[(c, s)]['speedup']:.2f}x" if (c, s) in mean.index else "-"
                                                         for s in SCOPES) for c in sorted(per_run["ratio"].unique())),
                        "-", None))
    return checks


def plot_runs(runs: list[Path], out: Path) -> None:
    """accuracy_vs_flops_speedup.png: final test accuracy (after fine-tuning, solid; before, dashed)
    against theoretical speedup (dense FLOPs / FLOPs of the kept weights, log), one line per scope,
    mean ± std over seeds, points labelled by compression ratio."""
    import matplotlib.ticker

    plt = plots._pyplot()

    per_run = finals(runs)
    if per_run.empty:
        return
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for scope, rows in per_run.groupby("scope", sort=True):
        g = rows.groupby("ratio").agg(speedup=("speedup", "mean"), acc=("test_acc", "mean"), std=("test_acc", "std"),
                                      before=("before", "mean")).reset_index().sort_values("ratio")
        line = ax.errorbar(g["speedup"], 100 * g["acc"], yerr=100 * g["std"].fillna(0), marker="o", capsize=3,
                           label=f"{scope} (fine-tuned)")
        ax.plot(g["speedup"], 100 * g["before"], linestyle="--", marker="x", color=line[0].get_color(), alpha=0.7,
                label=f"{scope} (pruned, before fine-tuning)")
        for _, r in g.iterrows():
            ax.annotate(f"{int(r['ratio'])}x", (r["speedup"], 100 * r["acc"]), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g×"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g×"))
    ax.tick_params(axis="x", which="minor", labelsize=6)
    ax.set_xlabel("theoretical speedup (dense FLOPs / FLOPs of kept weights)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"global vs layerwise magnitude, LeNet-5 / Fashion-MNIST (seeds: {per_run['seed'].nunique()}; labels: compression)",
                 fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    plots.save(fig, out / "accuracy_vs_flops_speedup.png")


register(Reproduction(
    name="global_vs_layerwise",
    paper="Blalock et al. 2020 (ShrinkBench), global vs layerwise magnitude pruning",
    setups=setups(RATIOS[::-1]),  # the checked ratios first: a partial run holds them
    check_runs=check_runs,
    plot_runs=plot_runs,
    ci=True,
    fast=["train.duration=2ep", "schedule.finetune.duration=1ep"],
    fast_setups=setups((16, 32)),
))
