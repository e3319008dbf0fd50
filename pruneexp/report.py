"""`pruneexp report`: many runs (one run, a multirun folder, several folders) -> one accuracy-sparsity
table over seeds (mean, std and count per setup and level) as table.csv and table.md, and
accuracy_vs_sparsity.png (x: fraction of weights remaining on a log axis, as in the LTH figures).
Knows records and files (config.yaml, levels.csv), never models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

from pruneexp.config import NON_RESULT_KEYS
from pruneexp.errors import PruneexpError
from pruneexp.results.store import atomic_write, write_csv, write_text

# what is averaged over seeds, per (setup, level)
METRICS = ("remaining", "test_acc", "test_acc_at_best", "val_acc", "best_val_acc", "best_step")
IGNORED = set(NON_RESULT_KEYS) | {"seed"}
# text a schedule records per level (e.g. dst's live architecture): the distinct values over seeds, joined
TEXT = ("live_units",)


def find_runs(paths: Iterable[Path | str]) -> list[Path]:
    """Every run directory (one holding config.yaml and levels.csv) at or under `paths`."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise PruneexpError(f"{path} does not exist: give run directories or folders that hold them (e.g. results/lth_lenet).")
        hits = [path] if (path / "levels.csv").exists() else sorted(p.parent for p in path.rglob("levels.csv"))
        found += [p for p in hits if (p / "config.yaml").exists() and p not in found]
    if not found:
        raise PruneexpError(f"No runs (directories with config.yaml and levels.csv) under {', '.join(map(str, paths))}.")
    return found


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value) if isinstance(value, (list, dict)) else value
    return out


def load_levels(runs: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """All level rows of `runs`, each with its run's config keys; and the keys that vary between
    runs (seed and output settings aside), which define the setups."""
    frames, configs = [], []
    for run in runs:
        config = flatten(yaml.safe_load((run / "config.yaml").read_text()))
        levels = pd.read_csv(run / "levels.csv")
        levels["remaining"] = 1.0 - levels["sparsity"]
        levels["run"] = run.name
        for key, value in config.items():
            levels[key] = value
        frames.append(levels)
        configs.append(config)
    keys = sorted({k for c in configs for k in c} - IGNORED)
    varying = [k for k in keys if len({str(c.get(k)) for c in configs}) > 1]
    return pd.concat(frames, ignore_index=True), varying


def setup_label(row: pd.Series | dict[str, Any], keys: list[str], default: str) -> str:
    return ", ".join(f"{k.split('.')[-1] if k.startswith('schedule.') else k}={row[k]}" for k in keys) or default


def aggregate(levels: pd.DataFrame, setup_keys: list[str]) -> pd.DataFrame:
    """One row per (setup, level): mean and std over seeds of METRICS, and the seed count."""
    levels = levels.copy()
    default = str(levels["experiment"].iloc[0]) if "experiment" in levels else "runs"
    levels["setup"] = [setup_label(r, setup_keys, default) for _, r in levels.iterrows()]
    metrics = [m for m in METRICS if m in levels]
    group = ["setup", *setup_keys, "level", "name"]
    stats = levels.groupby(group, sort=False, dropna=False)[metrics].agg(["mean", "std"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    stats["seeds"] = levels.groupby(group, sort=False, dropna=False)["seed"].nunique()
    for col in (c for c in TEXT if c in levels):
        stats[col] = levels.groupby(group, sort=False, dropna=False)[col].agg(
            lambda v: " / ".join(dict.fromkeys(str(x) for x in v if isinstance(x, str) and x)))
    return stats.reset_index()


def mean_pm(row: pd.Series, metric: str, scale: float = 100.0, digits: int = 2) -> str:
    """'mean ± std' of an aggregated metric (scaled, e.g. to %), '' where the row has none."""
    if f"{metric}_mean" not in row or pd.isna(row[f"{metric}_mean"]):
        return ""
    std = row[f"{metric}_std"]
    return f"{row[f'{metric}_mean'] * scale:.{digits}f}" + ("" if pd.isna(std) else f" ± {std * scale:.{digits}f}")


def markdown(table: pd.DataFrame, setup_keys: list[str]) -> str:
    """The table as markdown: mean ± std (n) per metric, accuracies in %."""
    head = ["setup", "level", "weights remaining %", "test acc %", "test acc at early stop %", "early-stop iteration", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join([r["setup"], str(r["level"]), mean_pm(r, "remaining", digits=1), mean_pm(r, "test_acc"),
                                         mean_pm(r, "test_acc_at_best"), mean_pm(r, "best_step", 1.0, 0), str(r["seeds"])]) + " |")
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, path: Path, metric: str = "test_acc", title: str = "") -> None:
    """Accuracy vs fraction of weights remaining (log x, decreasing to the right as in Frankle &
    Carbin 2019), one line per setup, a band of ± one std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for setup, rows in table.groupby("setup", sort=False):
        rows = rows.sort_values("remaining_mean", ascending=False)
        x, y = rows["remaining_mean"] * 100, rows[f"{metric}_mean"] * 100
        std = rows[f"{metric}_std"].fillna(0.0) * 100
        ax.plot(x, y, marker="o", markersize=3, label=setup)
        ax.fill_between(x, y - std, y + std, alpha=0.2)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel({"test_acc": "test accuracy (%)", "test_acc_at_best": "test accuracy at early stop (%)"}.get(metric, metric))
    ticks = sorted(set(round(v, 1) for v in table["remaining_mean"] * 100))
    ax.set_xticks(ticks[:: max(1, len(ticks) // 8)])
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    seeds = int(table["seeds"].max())
    ax.set_title(f"{title} (mean ± std over {seeds} seed{'s' if seeds > 1 else ''})".strip())
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def build_report(paths: Iterable[Path | str], out: Path, metric: str = "test_acc", title: str = "") -> pd.DataFrame:
    """Aggregate the runs under `paths` and write table.csv, table.md and accuracy_vs_sparsity.png into `out`."""
    levels, setup_keys = load_levels(find_runs(paths))
    if f"{metric}_mean" not in [f"{m}_mean" for m in METRICS]:
        raise PruneexpError(f"Unknown metric '{metric}'; known: {', '.join(METRICS)}.")
    table = aggregate(levels, setup_keys)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "table.csv", table.to_dict("records"))
    write_text(out / "table.md", markdown(table, setup_keys))
    plot(table, out / "accuracy_vs_sparsity.png", metric, title or str(levels["experiment"].iloc[0]))
    return table


def rich_table(table: pd.DataFrame, title: str) -> Any:
    from rich.table import Table

    out = Table(title=title)
    for col in ("setup", "level", "remaining %", "test acc %", "early-stop test acc %", "early-stop it", "seeds"):
        out.add_column(col, justify="left" if col == "setup" else "right")
    for _, r in table.iterrows():
        out.add_row(r["setup"], str(r["level"]), mean_pm(r, "remaining", digits=1), mean_pm(r, "test_acc"),
                    mean_pm(r, "test_acc_at_best"), mean_pm(r, "best_step", 1.0, 0), str(r["seeds"]))
    return out
