"""`pruneexp report`: many runs (one run, a multirun folder, several folders) -> one accuracy-sparsity
table over seeds (mean, std and count per setup and level, sorted by setup and sparsity, levels
named) as table.csv and table.md, and the figure that fits the runs:

- a sparsity sweep of one-step runs (oneshot, at_init: each run reaches one sparsity): one curve per
  method across the swept sparsities, accuracy of the final level against weights remaining (log)
  and compression ratio, the level before fine-tuning dashed, the dense accuracy as a reference
  (`sweep`, accuracy_vs_sparsity.png);
- runs that walk through the sparsities themselves (imp, gmp): one line per setup through its
  levels (`levels`, accuracy_vs_sparsity.png).
With measured latency (latency.csv), also speedup_vs_sparsity.png and accuracy_vs_speedup.png.

Runs that are not complete (summary.json status running, partial, failed) are marked or skipped,
and the report says which. A Hydra multirun folder leads to its runs through the small link file
(`pruneexp_run.json`) that each job writes into its job folder. Knows records and files
(config.yaml, levels.csv, latency.csv, summary.json), never models."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import yaml

from pruneexp import plots
from pruneexp.conf_store import comparable_view
from pruneexp.config import NON_RESULT_KEYS
from pruneexp.errors import PruneexpError
from pruneexp.io import atomic_write
from pruneexp.results.store import write_text
from pruneexp.results.table import missing

# what is averaged over seeds, per (setup, level)
METRICS = ("remaining", "effective_remaining", "test_acc", "test_acc_at_best", "val_acc", "best_val_acc", "best_step",
           "test_loss", "test_ppl", "val_ppl", "test_gap", "entropy_floor")  # the last ones: language models only
IGNORED = set(NON_RESULT_KEYS) | {"seed"}
JOB_LINK = "pruneexp_run.json"  # written by each job of a Hydra multirun into its job folder
# trackers' folders under results/: MLflow's artifact copies of run files are not runs
TRACKER_DIRS = {"mlartifacts", "mlruns", "wandb", "tensorboard"}
PICTURES = ("auto", "sweep", "levels")
# the header of the effective weights-remaining column (markdown, console)
EFFECTIVE = {False: "effective remaining %", True: "eff. %"}
# text a schedule records per level (e.g. dst's live architecture): the distinct values over seeds, joined
TEXT = ("live_units",)


def ignored(key: str) -> bool:
    """Whether a flattened config key is left out of setups (seed, output and display keys, loggers)."""
    return key in IGNORED or any(key.startswith(k + ".") for k in IGNORED)


@dataclass
class Found:
    """The runs found under some paths, and what was found that is not a usable run."""

    runs: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # multirun jobs whose run directory holds no level yet


def write_job_link(run_dir: Path) -> Path | None:
    """In a Hydra multirun, write `pruneexp_run.json` into this job's folder (hydra.runtime.output_dir),
    naming the job's run directory (relative to the job folder, and absolute), so that
    `pruneexp report <sweep folder>` finds the sweep's runs. Outside a multirun: nothing."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        job_dir = Path(hc.runtime.output_dir)
    except (ImportError, ValueError, AttributeError):
        return None
    target = Path(run_dir).absolute()
    link = {"run": os.path.relpath(target, job_dir.absolute()), "absolute": str(target),
            "overrides": list(hc.overrides.task), "job": hc.job.num}
    write_text(job_dir / JOB_LINK, json.dumps(link, indent=2) + "\n")
    return job_dir / JOB_LINK


def _follow(link: Path) -> Path:
    data = json.loads(link.read_text())
    relative = (link.parent / data["run"]).resolve()
    return relative if relative.exists() else Path(data["absolute"])


def find(paths: Iterable[Path | str]) -> Found:
    """Every run directory (config.yaml and levels.csv) at or under `paths`, and those that multirun
    job links under `paths` point to."""
    paths = [Path(p) for p in paths]
    found = Found()
    seen: set[Path] = set()

    def add(run: Path) -> None:
        key = run.resolve()
        if key not in seen and (run / "config.yaml").exists():
            seen.add(key)
            found.runs.append(run)

    for path in paths:
        if not path.exists():
            raise PruneexpError(f"{path} does not exist: give run directories or folders that hold them (e.g. results/lth_lenet).")
        if (path / "levels.csv").exists():
            add(path)
            continue
        for levels in sorted(path.rglob("levels.csv")):
            if not TRACKER_DIRS & set(levels.relative_to(path).parts):
                add(levels.parent)
        for link in sorted(path.rglob(JOB_LINK), key=lambda p: (len(p.parts), _num(p.parent.name), str(p))):
            target = _follow(link)
            if (target / "levels.csv").exists():
                add(target)
            elif target.resolve() not in seen:
                found.missing.append(f"{link.parent}: {target} holds no level (failed or skipped before its first level?)")
    if not found.runs:
        hint = " (a multirun folder leads to its runs through the pruneexp_run.json its jobs write; sweeps run before that was added hold none: report results/<experiment> instead)"
        raise PruneexpError(f"No runs (directories with config.yaml and levels.csv) under {', '.join(map(str, paths))}.{hint}")
    return found


def find_runs(paths: Iterable[Path | str]) -> list[Path]:
    """Every run directory (one holding config.yaml and levels.csv) at or under `paths`, multirun job
    links followed."""
    return find(paths).runs


def _num(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def run_status(run: Path) -> str:
    """summary.json's status (complete, running, partial, failed), 'unknown' without one."""
    try:
        return str(json.loads((run / "summary.json").read_text()).get("status", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value}; lists and empty dicts become strings."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value) if isinstance(value, (list, dict)) else value
    return out


def load_levels(runs: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """All level rows of `runs`, each with its run's config keys, run name and status; and the keys
    that vary between runs (seed and output settings aside), which define the setups."""
    frames, configs = [], []
    for run in runs:
        # keys a run predates read as the value it ran with (comparable_view), so that runs of one
        # setup written by older and newer code are one setup, not two
        config = flatten(comparable_view(yaml.safe_load((run / "config.yaml").read_text())))
        levels = pd.read_csv(run / "levels.csv")
        levels["remaining"] = 1.0 - levels["sparsity"]
        if "effective_sparsity" in levels:  # runs written before it have none: their column stays empty
            levels["effective_remaining"] = 1.0 - levels["effective_sparsity"]
        if "best_step" in levels:  # runs written before NaN meant "no validation split, no early stop" hold -1
            levels["best_step"] = levels["best_step"].where(levels["best_step"] >= 0)
        # a levels.csv column that is also a config key (sparsity: reached vs target) keeps its value as <name>_level
        levels = levels.rename(columns={c: f"{c}_level" for c in levels.columns if c in config})
        levels["run"] = run.name
        levels["run_dir"] = str(run)
        levels["status"] = run_status(run)
        for key, value in config.items():
            levels[key] = value
        frames.append(levels)
        configs.append(config)
    keys = sorted({k for c in configs for k in c if not ignored(k)})
    varying = [k for k in keys if len({str(c.get(k)) for c in configs}) > 1]
    return pd.concat(frames, ignore_index=True), varying


def short_key(key: str) -> str:
    """How a config key is shown in a setup label: schedule.retrain -> retrain, criterion.name -> criterion."""
    if key.endswith(".name"):
        return key[: -len(".name")]
    return key.split(".")[-1] if key.startswith("schedule.") else key


def setup_label(row: pd.Series | dict[str, Any], keys: list[str], default: str) -> str:
    """'key=value, ...' of the keys that define a setup and that this row's run has (a key of
    another method, e.g. `regularizer.strength` on a run without a regularizer, is left out rather
    than shown as nan); `default` when there are none."""
    return ", ".join(f"{short_key(k)}={shown(row[k])}" for k in keys if not missing(row[k])) or default


def shown(value: Any) -> Any:
    """A config value as a label shows it: 100.0 (an integer that a CSV column with gaps made a float) as 100."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _sort_value(value: Any) -> tuple[int, Any]:
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


def aggregate(levels: pd.DataFrame, setup_keys: list[str]) -> pd.DataFrame:
    """One row per (setup, level): mean and std over seeds of METRICS, the seed count and the count
    of runs that are not complete; sorted by the setup keys (numbers as numbers) and level."""
    levels = levels.copy()
    default = str(levels["experiment"].iloc[0]) if "experiment" in levels else "runs"
    levels["setup"] = [setup_label(r, setup_keys, default) for _, r in levels.iterrows()]
    if "status" not in levels:
        levels["status"] = "complete"
    levels["incomplete"] = levels["status"] != "complete"
    metrics = [m for m in METRICS if m in levels]
    group = ["setup", *setup_keys, "level", "name"]
    grouped = levels.groupby(group, sort=False, dropna=False)
    stats = grouped[metrics].agg(["mean", "std"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    stats["seeds"] = grouped["seed"].nunique()
    stats["incomplete_runs"] = grouped["incomplete"].sum().astype(int)
    for col in (c for c in TEXT if c in levels):  # text per level (dst's live units): the distinct values, joined
        stats[col] = grouped[col].agg(lambda v: " / ".join(dict.fromkeys(str(x) for x in v if isinstance(x, str) and x)))
    table = stats.reset_index()
    order = sorted(range(len(table)), key=lambda i: ([_sort_value(table.at[i, k]) for k in setup_keys], int(table.at[i, "level"])))
    return table.iloc[order].reset_index(drop=True)


def mean_pm(row: pd.Series, metric: str, scale: float = 100.0, digits: int = 2, sep: str = " ± ") -> str:
    """'mean ± std' of an aggregated metric (scaled, e.g. to %), '' where the row has none; the std is
    left out where it is exactly 0 over several seeds of a quantity that does not vary (weights remaining)."""
    if f"{metric}_mean" not in row or pd.isna(row[f"{metric}_mean"]):
        return ""
    std = row[f"{metric}_std"]
    return f"{row[f'{metric}_mean'] * scale:.{digits}f}" + ("" if pd.isna(std) else f"{sep}{std * scale:.{digits}f}")


def _level(row: pd.Series) -> str:
    return f"{row['level']} {row['name']}" + (" *" if row.get("incomplete_runs", 0) else "")


def _columns(setup_keys: list[str], compact: bool) -> list[tuple[str, Any]]:
    """(header, cell function) of the report table: markdown has one setup column, the console one
    column per setup key (short headers, '±' without spaces) so that it reads at 80 columns."""
    sep = "±" if compact else " ± "
    if compact:
        setup = [(short_key(k), lambda r, k=k: str(r[k])) for k in setup_keys] or [("setup", lambda r: str(r["setup"]))]
    else:
        setup = [("setup", lambda r: str(r["setup"]))]

    def fraction(metric: str) -> Any:
        def cell(r: pd.Series) -> str:  # the same in every seed (masks hit their target): no ± 0.00
            text = mean_pm(r, metric, digits=2, sep=sep)
            return text.split(sep)[0] if not r.get(f"{metric}_std") else text
        return cell

    return [*setup, ("level", _level),
            ("remaining %" if compact else "weights remaining %", fraction("remaining")),
            (EFFECTIVE[compact], fraction("effective_remaining")),
            ("test acc %", lambda r: mean_pm(r, "test_acc", sep=sep)),
            ("at ES %" if compact else "test acc at early stop %", lambda r: mean_pm(r, "test_acc_at_best", sep=sep)),
            ("ES it" if compact else "early-stop iteration", lambda r: mean_pm(r, "best_step", 1.0, 0, sep=sep)),
            ("seeds", lambda r: str(r["seeds"]))]


def table_cells(table: pd.DataFrame, setup_keys: list[str] | None = None, compact: bool = False,
                drop_constant: bool = False) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers and cells of the report table. Empty columns are left out; with `drop_constant`, so are
    columns equal in every row, returned as 'header: value' notes so that nothing is hidden."""
    columns = _columns(list(setup_keys or []), compact)
    cells = [[fn(r) for _, fn in columns] for _, r in table.iterrows()]
    keep, notes = [], []
    heads = [h for h, _ in columns]
    rem, eff = heads.index("remaining %" if compact else "weights remaining %"), heads.index(EFFECTIVE[compact])
    for j, (header, _) in enumerate(columns):
        values = {row[j] for row in cells}
        if values <= {""}:
            continue
        if j == eff and all(row[eff] in ("", row[rem]) for row in cells):  # no weight cut off from every path
            continue
        if drop_constant and len(values) == 1 and len(cells) > 1 and header not in ("level", "test acc %"):
            notes.append(f"{header}: {values.pop()}")
            continue
        keep.append(j)
    return [columns[j][0] for j in keep], [[row[j] for j in keep] for row in cells], notes


def markdown(table: pd.DataFrame, setup_keys: list[str] | None = None, skipped: list[str] | None = None) -> str:
    """The table as markdown: mean ± std per metric over seeds, accuracies in %, levels named, sorted by
    setup and level; a level marked * includes runs that are not complete."""
    head, cells, _ = table_cells(table, setup_keys)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    foot = []
    if "incomplete_runs" in table and table["incomplete_runs"].any():
        foot.append("\\* includes runs that are not complete (summary.json status running, partial or failed).")
    if skipped:
        foot.append(f"Left out, not complete: {len(skipped)} run(s): " + "; ".join(skipped) + ".")
    return "\n".join(lines) + "\n" + ("\n" + "\n\n".join(foot) + "\n" if foot else "")


def rich_table(table: pd.DataFrame, title: str, setup_keys: list[str] | None = None, width: int | None = None) -> Any:
    """The report table for the console: one column per setup key, columns equal in every row moved to
    the caption, setup values wrapped rather than cut; where it still does not fit `width` (default:
    the console's, 80 when not a terminal), the early-stop columns go (table.md keeps them).
    `setup_keys` default: the setup columns of `table` (those between 'setup' and 'level')."""
    from rich.console import Console
    from rich.table import Table

    if setup_keys is None:
        cols = list(table.columns)
        setup_keys = cols[cols.index("setup") + 1: cols.index("level")] if "setup" in cols and "level" in cols else []
    width = width or Console().width
    head, cells, notes = table_cells(table, setup_keys, compact=True, drop_constant=True)
    setup_cols = {*[short_key(k) for k in setup_keys], "setup"}

    def needed(head: list[str], cells: list[list[str]]) -> int:
        widths = [min(14, max([len(h)] + [len(r[j]) for r in cells])) if h in setup_cols else max([len(h)] + [len(r[j]) for r in cells])
                  for j, h in enumerate(head)]
        return sum(widths) + 3 * len(head) + 1

    dropped = []
    for col in ("ES it", "at ES %", EFFECTIVE[True], "seeds"):
        if needed(head, cells) <= width or col not in head:
            continue
        j = head.index(col)
        head, cells = head[:j] + head[j + 1:], [row[:j] + row[j + 1:] for row in cells]
        dropped.append(col)
    if dropped:
        notes.append(f"not shown at this width: {', '.join(dropped)} (see table.md)")
    if "ES it" in head or "at ES %" in head:
        notes.append("ES: early stop (best validation accuracy); at ES %: test accuracy there")
    if EFFECTIVE[True] in head:
        notes.append(f"{EFFECTIVE[True]}: weights remaining on an input-to-output path")
    out = Table(title=title, caption="; ".join(notes) or None, padding=(0, 1))
    for j, col in enumerate(head):  # setup values fold (past 14 characters); level names and numbers stay whole
        setup = col in setup_cols
        min_width = min(14, max([len(col)] + [len(row[j]) for row in cells])) if setup else None
        out.add_column(col, justify="left" if col == "level" or setup else "right", overflow="fold", no_wrap=not setup,
                       min_width=min_width)
    for row in cells:
        out.add_row(*row)
    return out


def choose_picture(table: pd.DataFrame) -> str:
    """'levels' when a setup walks through several sparsities (imp, gmp) or only one sparsity is
    reached; 'sweep' when each setup reaches one sparsity and the setups reach several (a swept
    oneshot or at_init): the accuracy-vs-sparsity curve across setups. `table`: the aggregated
    table (one row per setup and level; `remaining_mean`)."""
    pruned = table[table["remaining_mean"] < 1]
    if pruned.empty:
        return "levels"
    per_setup = pruned.groupby("setup")["remaining_mean"].apply(lambda s: s.round(6).nunique())
    if (per_setup > 1).any():
        return "levels"
    finals = pruned.groupby("setup")["remaining_mean"].min().round(3).nunique()
    return "sweep" if finals > 1 else "levels"


@dataclass(frozen=True)
class View:
    """How a report names what it shows, from a row of the aggregated table: the panel a setup is
    drawn in (its network or dataset) and the curve it belongs to (its method: `rigl`, `prune+FT`).
    None: the defaults of `curve_points`."""

    panel: Callable[[pd.Series], str] | None = None
    curve: Callable[[pd.Series], str] | None = None
    order: tuple[str, ...] = ()  # panels and curves named here come first, in this order (the others after, as met)
    # 'sweep': each setup's last level only, a method's setups joined across sparsities, even where a
    # setup walks through sparsities itself (gmp: what is compared is where it ends); None: `choose_picture`
    picture: str | None = None


PANEL_KEYS = ("model.name", "dataset.name")
# how a panel names a network or dataset
NAMES = {"lenet_300_100": "LeNet-300-100", "lenet5": "LeNet-5", "lenet5_caffe": "LeNet-5-Caffe", "mlp": "MLP", "gpt": "GPT",
         "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "mnist1d": "MNIST-1D", "digits": "digits", "cifar10": "CIFAR-10"}


def pretty(value: Any) -> str:
    """A network's or dataset's name as a panel title shows it (lenet_300_100 -> LeNet-300-100)."""
    return NAMES.get(str(value), str(value))


def default_view(setup_keys: list[str]) -> View:
    """Panels by the network and dataset where runs differ in them; curves by the other keys that
    differ (the swept sparsity aside): the value alone where one key tells them apart, else
    `key=value, ...` of the keys a setup has (a method's own keys, not every method's as nan)."""
    panel_keys = [k for k in PANEL_KEYS if k in setup_keys]
    curve_keys = [k for k in setup_keys if k not in panel_keys and k != "sparsity"]

    def panel(row: pd.Series) -> str:
        return " / ".join(pretty(row[k]) for k in panel_keys if not missing(row[k]))

    def curve(row: pd.Series) -> str:
        if len(curve_keys) == 1 and not missing(row[curve_keys[0]]):
            return str(shown(row[curve_keys[0]]))
        return setup_label(row, curve_keys, "all runs")

    return View(panel, curve)


def view_functions(table: pd.DataFrame, view: View | None) -> tuple[Callable[[pd.Series], str], Callable[[pd.Series], str]]:
    """The panel and curve functions of `view`, the defaults (`default_view`) where it has none."""
    default = default_view(_setup_keys(table))
    return ((view.panel if view and view.panel else None) or default.panel,
            (view.curve if view and view.curve else None) or default.curve)


def short_setups(table: pd.DataFrame, view: View | None) -> pd.Series:
    """Each row's setup as the figure names it (panel, curve, target sparsity), where these tell
    every setup apart; else the setup's keys (`setup_label`)."""
    panel_of, curve_of = view_functions(table, view)
    keys = _setup_keys(table)
    labels = {}
    for setup, group in table.groupby("setup", sort=False):
        row = group.iloc[0]
        target = f"sparsity {shown(row['sparsity'])}" if "sparsity" in keys and not missing(row["sparsity"]) else ""
        labels[setup] = ", ".join(t for t in (panel_of(row), curve_of(row), target) if t)
    if len(set(labels.values())) < len(labels) or not all(labels.values()):
        return table["setup"]
    return table["setup"].map(labels)


def curve_points(table: pd.DataFrame, metric: str, view: View | None = None, picture: str | None = None) -> pd.DataFrame:
    """The points of the accuracy-vs-sparsity figure and of the compact table, from the aggregated
    table: per setup, at each weights remaining it reaches, its last level ('final', e.g. after
    fine-tuning), the level before fine-tuning where the final one is 'finetuned' ('before'), and a
    trained dense level 0 ('dense'). In a sweep (each setup one sparsity), a setup's dense level is
    a reference line and its curve joins the setups of one method; otherwise a curve is one setup
    through its levels (named by the remaining it reaches where several setups share a method).
    Untrained levels (at_init's 'init') are no point. Columns: panel, curve, kind, remaining, mean,
    std, seeds, level, name."""
    panel_of, curve_of = view_functions(table, view)
    picture = picture or (view.picture if view else None) or choose_picture(table)
    rows = []
    setups = list(table.groupby("setup", sort=False))
    labels = {setup: (panel_of(g.iloc[0]), curve_of(g.iloc[0])) for setup, g in setups}
    shared = pd.Series([labels[s] for s, _ in setups]).value_counts()
    for setup, group in setups:
        group = group.sort_values("level")
        panel, curve = labels[setup]
        trained = group[(group["name"] != "init") & group[f"{metric}_mean"].notna()]  # evaluated levels only
        if trained.empty:
            continue
        final_remaining = trained.iloc[-1]["remaining_mean"]
        if picture != "sweep" and shared[(panel, curve)] > 1:
            curve = f"{curve} ({100 * final_remaining:.3g} %)"

        def point(r: pd.Series, kind: str) -> dict[str, Any]:
            return dict(panel=panel, curve=curve, kind=kind, remaining=float(r["remaining_mean"]), mean=r[f"{metric}_mean"],
                        std=r[f"{metric}_std"], seeds=int(r["seeds"]), level=int(r["level"]), name=r["name"])

        dense = trained[(trained["level"] == 0) & (trained["name"] == "dense")]
        at = trained[(trained["remaining_mean"] - final_remaining).abs() < 1e-9] if picture == "sweep" else trained
        if picture == "sweep":
            rows += [point(r, "dense") for _, r in dense.iterrows()]
            at = at[at["name"] != "dense"]
        for _, same in at.groupby(at["remaining_mean"].round(9), sort=False):
            last = same.iloc[-1]
            rows.append(point(last, "final"))
            before = same[same["name"] == "pruned"]
            if last["name"] == "finetuned" and len(before):
                rows.append(point(before.iloc[0], "before"))
    points = pd.DataFrame(rows, columns=["panel", "curve", "kind", "remaining", "mean", "std", "seeds", "level", "name"])
    order = list(view.order) if view else []
    met = {name: i for i, name in enumerate(dict.fromkeys([*points["panel"], *points["curve"]]))}

    def rank(name: str) -> int:  # "gmp (5 %)" ranks as "gmp"
        base = name.split(" (")[0]
        return order.index(base) if base in order else len(order) + met[name]

    return points.sort_values(["panel", "curve"], key=lambda col: col.map(rank), kind="stable").reset_index(drop=True)


def compact_markdown(points: pd.DataFrame, metric: str) -> str:
    """The view a reader wants first: per panel, method x weights remaining, `metric` mean ± std
    over seeds (in %) of each setup's last level there (after fine-tuning, where it has one)."""
    out = []
    label = METRIC_TEXT.get(metric, metric)
    for panel, here in points.groupby("panel", sort=False):
        curves = list(dict.fromkeys(here[here["kind"] != "dense"]["curve"]))
        if not curves:
            continue
        finals = here[here["kind"] == "final"]
        remaining = sorted({round(float(r), 6) for r in finals["remaining"]}, reverse=True)
        head = ["weights remaining %", "compression", *curves]
        lines = [*([f"**{panel}**", ""] if panel else []), "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        dense = here[here["kind"] == "dense"]
        if len(dense):
            cells = [_pm(dense[dense["curve"] == c]) for c in curves]
            lines.append("| 100 (dense) | 1× | " + " | ".join(cells) + " |")
        for r in remaining:
            cells = [_pm(finals[(finals["curve"] == c) & ((finals["remaining"] - r).abs() < 1e-6)]) for c in curves]
            lines.append(f"| {100 * r:.3g} | {1 / r:.3g}× | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    seeds = points["seeds"]
    note = f"{label} (%), mean ± std over {seeds.min()}-{seeds.max()} seeds" if seeds.min() != seeds.max() else (
        f"{label} (%), mean ± std over {seeds.max()} seeds" if seeds.max() > 1 else f"{label} (%), 1 seed")
    return f"{note}; each setup's last level at that sparsity.\n\n" + "\n\n".join(out) + "\n"


METRIC_TEXT = {"test_acc": "test accuracy", "test_acc_at_best": "test accuracy at the early-stop iteration",
               "val_acc": "validation accuracy", "best_val_acc": "best validation accuracy"}


def _pm(rows: pd.DataFrame) -> str:
    if rows.empty or pd.isna(rows["mean"].iloc[0]):
        return ""
    r = rows.iloc[0]
    return f"{100 * r['mean']:.2f}" + ("" if pd.isna(r["std"]) else f" ± {100 * r['std']:.2f}")


def _setup_keys(table: pd.DataFrame) -> list[str]:
    """The setup keys of an aggregated table: its columns between 'setup' and 'level'."""
    cols = list(table.columns)
    return cols[cols.index("setup") + 1: cols.index("level")]


def read_table(source: Path | str | io.StringIO) -> pd.DataFrame:
    """An aggregated table as table.csv holds it (floats read back to the bit), its setups labelled
    by today's `setup_label`. The report and the checks read every table through this, whether it
    was aggregated from runs a moment ago or committed long since, so both give the same files."""
    table = pd.read_csv(source)  # pandas >= 3 reads every float back to the bit (checked by the rebuild test)
    for col in TEXT:
        if col in table:
            table[col] = table[col].fillna("").astype(str)
    keys = _setup_keys(table)
    if keys:
        table["setup"] = [setup_label(r, keys, str(r["setup"])) for _, r in table.iterrows()]
    return table


def canonical(table: pd.DataFrame) -> pd.DataFrame:
    """`table` as it reads back from its table.csv (see `read_table`)."""
    return read_table(io.StringIO(table.to_csv(index=False)))


def latency_rows(runs: list[Path], levels: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """The timed (status ok) latency.csv rows of `runs`, joined with their level's weights remaining
    and `metric`, and labelled by curve (`by`)."""
    frames = []
    for run in runs:
        path = run / "latency.csv"
        if not path.exists():
            continue
        lat = pd.read_csv(path)
        lat = lat[lat["status"] == "ok"]
        if lat.empty:
            continue
        own = levels[levels["run_dir"] == str(run)]
        keep = own[["level", "remaining", metric]].drop_duplicates("level")
        lat = lat.drop(columns=[c for c in ("remaining", metric) if c in lat]).merge(keep, on="level", how="inner")
        lat["curve"] = setup_label(own.iloc[0], by, "") if len(own) else ""
        lat["run"] = run.name
        frames.append(lat)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def default_title(levels: pd.DataFrame) -> str:
    """'<experiment>: <model> on <dataset>', each part only where all runs agree on it."""
    def common(key: str) -> str | None:
        values = set(levels[key].astype(str)) if key in levels else set()
        return values.pop() if len(values) == 1 else None

    model, dataset, experiment = common("model.name"), common("dataset.name"), common("experiment") or "runs"
    return f"{experiment}: {model} on {dataset}" if model and dataset else experiment


@dataclass
class Report:
    """What `build_report` wrote: the table, the picture chosen, the files, the runs used and left out."""

    table: pd.DataFrame
    picture: str
    files: list[Path]
    runs: list[Path]
    skipped: list[str]
    incomplete: list[str]
    missing: list[str]


def build_report(paths: Iterable[Path | str], out: Path, metric: str = "test_acc", title: str = "",
                 x: str = "auto", by: list[str] | None = None, incomplete: str = "mark", view: View | None = None,
                 paper: Iterable[PaperPoint] = ()) -> pd.DataFrame:
    """Aggregate the runs under `paths` and write table.csv, table.md, accuracy_vs_sparsity.png (and
    the latency plots when runs timed their levels) into `out`; return the table. See `make_report`."""
    return make_report(paths, out, metric, title, x, by, incomplete, view, paper).table


def make_report(paths: Iterable[Path | str], out: Path, metric: str = "test_acc", title: str = "",
                x: str = "auto", by: list[str] | None = None, incomplete: str = "mark", view: View | None = None,
                paper: Iterable[PaperPoint] = ()) -> Report:
    """Aggregate the runs under `paths` into `out` (see `write_report`; `view` and `paper`: how a
    reproduction names its panels and curves, and the paper's numbers).

    `x`: 'auto' (decided from the runs, see `choose_picture`), 'sweep' (final level of each run across
    runs) or 'levels' (each run's levels). `by`: config keys (dotted, as in config.yaml) whose values
    tell the curves apart (default: every key that varies between runs, minus `sparsity` in a sweep).
    `incomplete`: 'mark' keeps runs whose summary.json status is not complete and marks their rows
    (table.csv column incomplete_runs, * in table.md), 'skip' leaves them out; both list them."""
    if x not in PICTURES:
        raise PruneexpError(f"Unknown --x '{x}'; known: {', '.join(PICTURES)}.")
    if incomplete not in ("mark", "skip"):
        raise PruneexpError(f"incomplete must be 'mark' or 'skip', not '{incomplete}'.")
    if metric not in METRICS or metric in ("remaining", "best_step"):
        raise PruneexpError(f"Unknown metric '{metric}'; known: {', '.join(m for m in METRICS if m not in ('remaining', 'best_step'))}.")
    found = find(paths)
    statuses = {run: run_status(run) for run in found.runs}
    not_complete = [f"{run} ({status})" for run, status in statuses.items() if status != "complete"]
    runs = [r for r in found.runs if incomplete == "mark" or statuses[r] == "complete"]
    skipped = not_complete if incomplete == "skip" else []
    if not runs:
        raise PruneexpError(f"No complete runs under {', '.join(map(str, paths))}: {'; '.join(not_complete)}. "
                            "Wait for them to finish, or include them marked (--include-incomplete).")
    levels, setup_keys = load_levels(runs)
    if metric not in levels:
        raise PruneexpError(f"The runs have no '{metric}' column in levels.csv.")
    if by is not None:
        unknown = [k for k in by if k not in levels.columns]
        if unknown:
            raise PruneexpError(f"--by {', '.join(unknown)}: not a config key of these runs (use dotted keys as in config.yaml, e.g. criterion.name).")
    table = canonical(aggregate(levels, setup_keys))
    if by is not None:  # the curves named by these keys alone
        view = View(curve=lambda row: setup_label(row, [k for k in by if k in row.index], "all runs"))
    title = title or default_title(levels)
    files, picture = write_report(table, out, metric, title, view, paper, None if x == "auto" else x, skipped)
    lat = latency_rows(runs, levels, [k for k in setup_keys if k != "sparsity"] if by is None else by, metric)
    if not lat.empty:
        if lat["curve"].nunique() > 1:
            lat["form"] = lat["curve"] + ": " + lat["form"]
        files += write_latency(pd.read_csv(io.StringIO(lat.to_csv(index=False))), out, metric, title)
    return Report(table, picture, files, runs, skipped, [] if incomplete == "skip" else not_complete, found.missing)


LATENCY = "latency.csv"  # the timed rows behind the latency figures, kept beside table.csv


def write_latency(lat: pd.DataFrame, out: Path, metric: str, title: str) -> list[Path]:
    """latency.csv (the runs' timed latency rows, each with its level's weights remaining and
    `metric`: what the latency figures are drawn from, so that a report rebuilt without its runs
    redraws them) and, where a level is pruned, speedup_vs_sparsity.png and accuracy_vs_speedup.png."""
    files = [out / LATENCY]
    atomic_write(files[0], lambda p: lat.to_csv(p, index=False))
    if (lat["remaining"] < 1.0).any():
        files.append(out / "speedup_vs_sparsity.png")
        plots.save(plots.speedup_curves(lat, title), files[-1])
        files.append(out / "accuracy_vs_speedup.png")
        plots.save(plots.accuracy_vs_speedup(lat, metric, title), files[-1])
    return files


@dataclass(frozen=True)
class PaperPoint:
    """A number the paper gives, drawn as a star: in `panel` (a View's panel name; '' any), for
    `curve` (its colour), at `remaining` (fraction of weights), `value` (of the report's metric)."""

    panel: str
    curve: str
    remaining: float
    value: float
    label: str


def write_report(table: pd.DataFrame, out: Path, metric: str, title: str, view: View | None = None,
                 paper: Iterable[PaperPoint] = (), picture: str | None = None, skipped: list[str] | None = None
                 ) -> tuple[list[Path], str]:
    """table.csv, table.md (the compact view, method x weights remaining, then every level) and
    accuracy_vs_sparsity.png (one panel per network or dataset, one curve per method, the paper's
    numbers as stars) from an aggregated table, into `out`; the same bytes from the same table.
    Returns the files and the picture ('sweep' or 'levels', see `choose_picture`)."""
    out.mkdir(parents=True, exist_ok=True)
    picture = picture or (view.picture if view else None) or choose_picture(table)
    points = curve_points(table, metric, view, picture)
    files = [out / "table.csv", out / "table.md", out / "accuracy_vs_sparsity.png"]
    atomic_write(files[0], lambda p: table.to_csv(p, index=False))
    long = markdown(table.assign(setup=short_setups(table, view)), _setup_keys(table), skipped)
    write_text(files[1], compact_markdown(points, metric) + "\nEvery level of every setup:\n\n" + long)
    marks = pd.DataFrame([vars(p) for p in paper], columns=["panel", "curve", "remaining", "value", "label"])
    plots.save(plots.panel_curves(points, metric, title, marks), files[2])
    return files, picture
