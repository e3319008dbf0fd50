"""Figures from aggregated records (pandas frames of level rows and latency rows); knows records,
never models. Used by `pruneexp report` and by the TensorBoard logger.

- `level_curves`: accuracy vs weights remaining, one line per setup through the levels of its runs
  (imp, gmp: one run walks through the sparsities; Frankle & Carbin 2019's figures).
- `panel_curves`: the report's figure: accuracy vs weights remaining (log; compression on the top
  axis), one panel per network or dataset, one curve per method (through its levels, or across the
  swept sparsities), the level before fine-tuning dashed, the dense accuracy as a reference, the
  paper's numbers as stars (Blalock et al. 2020, ShrinkBench, ask for both axes).
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


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# no "Software: matplotlib x.y" text chunk: the same figure gives the same bytes (a report rebuilt
# from its committed table is compared byte for byte); the Agg backend draws the pixels deterministically
PNG_METADATA = {"Software": None}


def save(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically and close it: Agg backend, no metadata that
    changes between runs or versions, so a rebuilt figure is byte-identical."""
    plt = _pyplot()
    atomic_write(path, lambda p: fig.savefig(p, format="png", metadata=PNG_METADATA))
    plt.close(fig)


def log_ticks(values: list[float], most: int = 10) -> list[float]:
    """Tick positions on a log axis from the data's own values (rounded to 3 significant digits),
    thinned so that no two lie closer than 1/`most` of the axis' span (so that their labels never
    overlap on a panel 5 inches wide: 20.01x and 20x become one tick, 13 % and 10 % stay two)."""
    import math

    kept: list[float] = []
    points = sorted({float(f"{v:.3g}") for v in values if v > 0}, reverse=True)
    if not points:
        return kept
    span = math.log10(points[0] / points[-1])
    gap = max(span / most, 0.01)
    for v in points:
        if not kept or math.log10(kept[-1] / v) >= gap - 1e-9:
            kept.append(v)
    if kept[-1] != points[-1]:  # the far end (the sparsest point) always has its tick
        kept[-1 if len(kept) > 1 and math.log10(kept[-1] / points[-1]) < gap else len(kept):] = [points[-1]]
    return kept


def _remaining_axes(ax: Any, remaining_pct: list[float]) -> None:
    """x: weights remaining (%, log, decreasing to the right as in Frankle & Carbin 2019) with the
    data's own values as ticks; top: the same positions as compression ratios (dense / remaining)."""
    import matplotlib.ticker

    ticks = log_ticks(remaining_pct)
    ax.set_xscale("log")
    low, high = min(remaining_pct), max(remaining_pct)
    ax.set_xlim(high * 1.25, low / 1.25)  # inverted, a margin of a tenth of a decade each side
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.minorticks_off()
    top = ax.twiny()
    top.set_xscale("log")
    top.set_xlim(ax.get_xlim())
    top.set_xticks(ticks)
    top.set_xticklabels([f"{100 / t:.3g}×" for t in ticks], fontsize=7)
    top.minorticks_off()
    top.set_xlabel("compression (dense / remaining)", fontsize=8)


def panel_curves(points: pd.DataFrame, metric: str = "test_acc", title: str = "", paper: pd.DataFrame | None = None) -> Any:
    """Accuracy against weights remaining, one panel per network or dataset (`panel`), one line per
    method (`curve`), the same colour for a method in every panel; mean ± std over seeds as error
    bars; the dense network dotted; the paper's numbers as stars. Compression ratios on the top
    axis, at the same ticks. Where setups are fine-tuned, the level before fine-tuning gets a panel
    of its own under its panel (dashed): on one axis it would squeeze the methods' final numbers,
    a point or two apart, into a line.

    `points` columns: panel, curve, kind ('final', 'before' or 'dense'), remaining (fraction), mean,
    std (fractions of 1), seeds. `paper` columns: panel, curve, remaining, value, label."""
    plt = _pyplot()
    # an accuracy or error is a fraction drawn in %; a perplexity or loss is drawn as it is (perplexity on a log axis)
    scale, unit = (1.0, "") if metric.endswith(("ppl", "loss")) else (100.0, " %")
    panels = list(dict.fromkeys(points["panel"]))
    cols = len(panels) if len(panels) <= 3 else -(-len(panels) // -(-len(panels) // 3))  # 4 panels: 2 x 2
    kinds = ["final", "before"] if (points["kind"] == "before").any() else ["final"]
    blocks = -(-len(panels) // cols)
    fig, axes = plt.subplots(blocks * len(kinds), cols, figsize=(5.2 * cols, 4.0 * blocks * len(kinds)), dpi=120, squeeze=False,
                             layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {c: colors[i % len(colors)] for i, c in enumerate(dict.fromkeys(points["curve"]))}
    paper = paper if paper is not None else pd.DataFrame(columns=["panel", "curve", "remaining", "value", "label"])
    used = []
    for i, panel in enumerate(panels):
        here = points[points["panel"] == panel]
        xs = list(here[here["kind"] != "dense"]["remaining"] * 100) + list(100 * paper[paper["panel"].isin([panel, ""])]["remaining"])
        for k, kind in enumerate(kinds):
            ax = axes[(i // cols) * len(kinds) + k][i % cols]
            used.append(ax)
            marks = paper[paper["panel"].isin([panel, ""])] if kind == "final" else paper.iloc[0:0]
            for curve, rows in here[here["kind"] == kind].groupby("curve", sort=False):
                r = rows.sort_values("remaining", ascending=False)
                ax.errorbar(r["remaining"] * 100, r["mean"] * scale, yerr=r["std"].fillna(0.0) * scale, capsize=3, color=colour[curve],
                            linewidth=1.3, markersize=4 if kind == "final" else 5, fmt="o-" if kind == "final" else "x--",
                            label=curve if kind == "final" else f"{curve}: before fine-tuning")
            dense = here[here["kind"] == "dense"]
            shared = dense["mean"].round(6).nunique() == 1  # one dense network behind every curve: its value in the title
            for curve, rows in dense.groupby("curve", sort=False):
                value = float(rows["mean"].mean()) * scale
                ax.axhline(value, color="black" if shared else colour[curve], linestyle=":", linewidth=1,
                           label="dense network" if shared else f"{curve}: dense ({value:.2f}{unit})")
                if shared:
                    break
            name = panel if kind == "final" else f"{panel + ': ' if panel else ''}pruned, before fine-tuning"
            if len(dense) and shared:
                value = f"dense {scale * float(dense['mean'].mean()):.2f}{unit}"
                name = f"{name} ({value})" if name else value
            for _, m in marks.iterrows():
                ax.plot([100 * float(m["remaining"])], [scale * float(m["value"])], marker="*", markersize=12, linestyle="none",
                        color=colour.get(m["curve"], "black"), markeredgecolor="black", label=f"paper: {m['label']}")
            _remaining_axes(ax, xs)
            low, high = ax.get_ylim()
            if metric.endswith("ppl"):
                ax.set_yscale("log")
            elif high - low < 1.0:  # at least one point of accuracy: 98.00 vs 98.08 is not a cliff
                middle = (low + high) / 2
                ax.set_ylim(middle - 0.5, middle + 0.5)
            ax.set_xlabel("weights remaining (%)")
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            ax.set_title(name, fontsize=9)
            ax.grid(alpha=0.3)
    for ax in axes.flat:
        if ax not in used:
            ax.set_visible(False)
    _legend_below(fig, used, fontsize=8, last=("dense", "paper"))
    fig.suptitle(f"{title} ({_seeds_note(points['seeds'])})".strip(), fontsize=10)
    return fig


def _legend_below(fig: Any, axes: Any, fontsize: int = 7, width: int | None = None, last: tuple[str, ...] = ()) -> None:
    """One legend for the whole figure, below its axes (the labels of every axis in `axes`, each once,
    long ones wrapped at `width` characters, default: what fits the figure), the figure made taller by its lines. A legend inside an
    axis hides points and, when a setup label (e.g. `model.init=conv:glorot_uniform,...`) is wider than
    the axis, squeezes the axes under tight_layout; below them it costs height, not the data's room.
    Labels that start with one of `last` go after the others. Needs a figure made with
    layout="constrained" (matplotlib's "outside" legend placement)."""
    import textwrap

    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if not seen:
        return
    if last:  # references (dense, the paper's numbers) after the curves
        seen = dict(sorted(seen.items(), key=lambda item: item[0].startswith(last)))
    # wrapped to the figure's width (a character is about 0.55 of the font size wide): none runs off its edge
    width = width or int(fig.get_figwidth() * 72 / (0.55 * fontsize)) - 8
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
