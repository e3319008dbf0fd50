"""Figures from aggregated records (pandas frames of level rows and latency rows); knows records,
never models. Used by `pruneexp report` and by the TensorBoard logger.

- `level_curves`: accuracy vs weights remaining, one line per setup through the levels of its runs
  (imp, gmp: one run walks through the sparsities; Frankle & Carbin 2019's figures).
- `sweep_curves`: accuracy of the final level vs weights remaining (log) and vs compression ratio,
  one curve per method across the swept sparsities, the level before fine-tuning as a dashed
  companion and the dense accuracy as a horizontal reference (Blalock et al. 2020, ShrinkBench).
- `speedup_curves`, `accuracy_vs_speedup`: measured latency (latency.csv) against sparsity with the
  FLOP-ratio ideal as a reference, and accuracy against measured speedup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pruneexp.io import atomic_write

METRIC_LABELS = {"test_acc": "test accuracy (%)", "test_acc_at_best": "test accuracy at early stop (%)",
                 "val_acc": "validation accuracy (%)", "best_val_acc": "best validation accuracy (%)"}


# how the dashed companion of a sweep curve is named, by the name of the final level
BEFORE = {"finetuned": "before fine-tuning", "trained": "before training"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically and close it."""
    plt = _pyplot()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def _legend_below(fig: Any, axes: Any, fontsize: int = 7, width: int = 110) -> None:
    """One legend for the whole figure, below its axes (the labels of every axis in `axes`, each once,
    long ones wrapped at `width` characters), the figure made taller by its lines. A legend inside an
    axis hides points and, when a setup label (e.g. `model.init=conv:glorot_uniform,...`) is wider than
    the axis, squeezes the axes under tight_layout; below them it costs height, not the data's room.
    Needs a figure made with layout="constrained" (matplotlib's "outside" legend placement)."""
    import textwrap

    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if not seen:
        return
    labels = [textwrap.fill(label, width, subsequent_indent="  ") for label in seen]
    ncol = 2 if max(len(label) for label in labels) <= width // 2 - 5 and len(labels) > 3 else 1
    lines = sum(label.count("\n") + 1 for label in labels) if ncol == 1 else -(-len(labels) // ncol)
    fig.set_figheight(fig.get_figheight() + 0.17 * lines + 0.2)
    fig.legend(list(seen.values()), labels, loc="outside lower center", ncol=ncol, fontsize=fontsize, frameon=False)


def _seeds_note(seeds: pd.Series) -> str:
    top = int(seeds.max()) if len(seeds) else 0
    low = int(seeds.min()) if len(seeds) else 0
    count = f"{low}-{top}" if low != top else f"{top}"
    return f"mean ± std over {count} seeds" if top > 1 else "1 seed"


def _log_remaining_axis(ax: Any, remaining_pct: list[float], invert: bool = True) -> None:
    import matplotlib.ticker

    ax.set_xscale("log")
    if invert:
        ax.invert_xaxis()
    ticks = sorted(set(round(v, 2) for v in remaining_pct if v > 0))
    if ticks:
        ax.set_xticks(ticks[:: max(1, len(ticks) // 8)])
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.minorticks_off()


def level_curves(table: pd.DataFrame, metric: str = "test_acc", title: str = "") -> Any:
    """Accuracy vs fraction of weights remaining (log x, decreasing to the right as in Frankle &
    Carbin 2019), one line per setup through its levels, a band of ± one std over seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120, layout="constrained")
    for setup, rows in table.groupby("setup", sort=False):
        rows = rows.sort_values(["remaining_mean", "level"], ascending=[False, True])
        x, y = rows["remaining_mean"] * 100, rows[f"{metric}_mean"] * 100
        std = rows[f"{metric}_std"].fillna(0.0) * 100
        ax.plot(x, y, marker="o", markersize=3, label=setup)
        ax.fill_between(x, y - std, y + std, alpha=0.2)
    _log_remaining_axis(ax, list(table["remaining_mean"] * 100))
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(alpha=0.3)
    if table["setup"].nunique() <= 12:
        _legend_below(fig, [ax], fontsize=8)
    ax.set_title(f"{title} ({_seeds_note(table['seeds'])})".strip(), fontsize=10)
    return fig


def sweep_curves(points: pd.DataFrame, metric: str = "test_acc", title: str = "") -> Any:
    """Accuracy of each run's final level across swept sparsities: left, against weights remaining
    (log, decreasing to the right); right, against compression ratio (dense / non-zero weights, log).

    `points` has one row per (curve, sparsity) with `curve`, `remaining_mean`, `{metric}_mean/_std`,
    `seeds`, and optionally `before_{metric}_mean/_std` and `before_name` (the level before
    fine-tuning: a dashed companion curve) and `dense_{metric}_mean` (a horizontal reference)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120, sharey=True, layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    dense_drawn: dict[float, Any] = {}
    shared = f"dense_{metric}_mean" in points and points[f"dense_{metric}_mean"].round(6).nunique() <= 1
    for i, (curve, rows) in enumerate(points.groupby("curve", sort=False)):
        color = colors[i % len(colors)]
        rows = rows.sort_values("remaining_mean", ascending=False)
        remaining = rows["remaining_mean"]
        for ax, x in ((axes[0], remaining * 100), (axes[1], 1.0 / remaining)):
            y, std = rows[f"{metric}_mean"] * 100, rows[f"{metric}_std"].fillna(0.0) * 100
            ax.plot(x, y, marker="o", markersize=4, color=color, label=f"{curve}: {rows['final_name'].iloc[0]}")
            ax.fill_between(x, y - std, y + std, color=color, alpha=0.2)
            if f"before_{metric}_mean" in rows and rows[f"before_{metric}_mean"].notna().any():
                yb = rows[f"before_{metric}_mean"] * 100
                sb = rows[f"before_{metric}_std"].fillna(0.0) * 100
                ax.plot(x, yb, linestyle="--", marker="x", markersize=4, color=color, alpha=0.8,
                        label=f"{curve}: {rows['before_name'].dropna().iloc[0]} ({BEFORE.get(rows['final_name'].iloc[0], 'before the last phase')})")
                ax.fill_between(x, yb - sb, yb + sb, color=color, alpha=0.08)
        if f"dense_{metric}_mean" in rows and rows[f"dense_{metric}_mean"].notna().any():
            dense = round(float(rows[f"dense_{metric}_mean"].mean()) * 100, 6)
            if dense not in dense_drawn:  # runs sharing one dense network share one reference line
                label = f"dense ({dense:.2f} %)" if shared else f"dense ({curve}, {dense:.2f} %)"
                line_color = "black" if not dense_drawn else color
                for ax in axes:
                    dense_drawn[dense] = ax.axhline(dense, color=line_color, linestyle=":", linewidth=1,
                                                    label=label if ax is axes[0] else None)
    _log_remaining_axis(axes[0], list(points["remaining_mean"] * 100))
    axes[0].set_xlabel("weights remaining (%)")
    axes[1].set_xscale("log")
    ratios = sorted(set(round(float(1.0 / r), 2) for r in points["remaining_mean"] if r > 0))
    import matplotlib.ticker

    axes[1].set_xticks(ratios[:: max(1, len(ratios) // 8)])
    axes[1].get_xaxis().set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g×"))
    axes[1].minorticks_off()
    axes[1].set_xlabel("compression ratio (dense / remaining weights)")
    axes[0].set_ylabel(METRIC_LABELS.get(metric, metric))
    for ax in axes:
        ax.grid(alpha=0.3)
    _legend_below(fig, axes)
    fig.suptitle(f"{title} ({_seeds_note(points['seeds'])})".strip(), fontsize=10)
    return fig


def speedup_curves(latency: pd.DataFrame, title: str = "") -> Any:
    """Measured speedup vs weights remaining, one panel per batch size, one line per form (mean and
    ± std over runs), with the FLOP-ratio ideal (dense FLOPs / effective FLOPs) as a dashed reference.
    `latency` holds latency.csv rows with status ok and a `remaining` column."""
    plt = _pyplot()
    batches = sorted(latency["batch_size"].unique())
    fig, axes = plt.subplots(1, len(batches), figsize=(5.2 * len(batches), 4.2), dpi=120, squeeze=False, layout="constrained")
    for ax, batch in zip(axes[0], batches):
        rows = latency[latency["batch_size"] == batch]
        for form, frows in rows[rows["form"].str.split(": ").str[-1] != "dense"].groupby("form", sort=True):
            g = frows.groupby("remaining")["speedup_vs_dense"].agg(["mean", "std", "count"]).reset_index()
            g = g.sort_values("remaining", ascending=False)
            x = g["remaining"] * 100
            ax.plot(x, g["mean"], marker="o", markersize=3, label=form)
            ax.fill_between(x, g["mean"] - g["std"].fillna(0), g["mean"] + g["std"].fillna(0), alpha=0.15)
        # the ideal of each setup ("setup: form") on its own: two networks' FLOP ratios are not one curve
        setups = rows["form"].str.rpartition(": ")[0]
        for j, (_, srows) in enumerate(rows.groupby(setups, sort=True)):
            ideal = srows.groupby("remaining")["flop_ratio"].mean().reset_index().sort_values("remaining", ascending=False)
            ax.plot(ideal["remaining"] * 100, 1.0 / ideal["flop_ratio"], color="black", linestyle="--", linewidth=1,
                    marker="x", markersize=4, label="FLOP-ratio ideal (per setup)" if j == 0 else None)
        ax.axhline(1.0, color="grey", linewidth=0.8, label="dense form (1×)")
        _log_remaining_axis(ax, list(rows["remaining"] * 100))
        ax.set_yscale("log")
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel("speedup vs dense form (×)")
        ax.set_title(f"batch size {int(batch)}", fontsize=9)
        ax.grid(alpha=0.3)
    _legend_below(fig, axes[0])
    device = ", ".join(sorted(set(str(v) for v in latency.get("machine", pd.Series(dtype=str)).dropna())))
    fig.suptitle(f"{title}: measured speedup per form{f' ({device})' if device else ''}".strip(": "), fontsize=10)
    return fig


def accuracy_vs_speedup(points: pd.DataFrame, metric: str = "test_acc", title: str = "") -> Any:
    """Accuracy against measured speedup (the second axis Blalock et al. 2020 ask for): one marker per
    (run level, form) at each batch size, points of one form joined in order of sparsity.
    `points` columns: form, batch_size, remaining, speedup_vs_dense, `metric`."""
    plt = _pyplot()
    import matplotlib.ticker

    points = points[points["form"].str.split(": ").str[-1] != "dense"]  # the dense form is the 1× reference line
    batches = sorted(points["batch_size"].unique())
    fig, axes = plt.subplots(1, len(batches), figsize=(5.2 * len(batches), 4.2), dpi=120, squeeze=False, sharey=True,
                             layout="constrained")
    for ax, batch in zip(axes[0], batches):
        rows = points[points["batch_size"] == batch]
        for form, frows in rows.groupby("form", sort=True):
            g = frows.groupby("remaining").agg(speedup=("speedup_vs_dense", "mean"), acc=(metric, "mean")).reset_index()
            g = g.sort_values("remaining", ascending=False)
            ax.plot(g["speedup"], g["acc"] * 100, marker="o", markersize=4, label=form)
            for _, r in g.iterrows():
                ax.annotate(f"{r['remaining'] * 100:.3g}%", (r["speedup"], r["acc"] * 100), fontsize=6,
                            textcoords="offset points", xytext=(3, 3))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g×"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g×"))
        ax.tick_params(axis="x", which="minor", labelsize=6)
        ax.axvline(1.0, color="grey", linewidth=0.8, label="dense form (1×)")
        ax.set_xlabel("measured speedup vs dense form (×)")
        ax.set_title(f"batch size {int(batch)} (labels: weights remaining)", fontsize=9)
        ax.grid(alpha=0.3)
    _legend_below(fig, axes[0])
    axes[0][0].set_ylabel(METRIC_LABELS.get(metric, metric))
    fig.suptitle(f"{title}: accuracy vs measured speedup".strip(": "), fontsize=10)
    return fig
