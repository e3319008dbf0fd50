"""`pruneexp reproduce NAME [--fast]`: run a paper's configs (conf/experiment/NAME.yaml plus the
setups and seeds below), build the report, check the paper's claims under stated tolerances, and
print and write the pass/fail table next to the report (results/reproductions/NAME[_fast]/)."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from pruneexp.errors import PruneexpError
from pruneexp.registry import Registry, import_modules
from pruneexp.report import LATENCY, PaperPoint, View, build_report, read_table, rich_table, write_latency, write_report
from pruneexp.results.store import write_csv, write_text

CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"


@dataclass
class Check:
    """One claim of the paper, our number, and the verdict (None: reported without a verdict).
    `reproduced=False` with `passed=None`: a faithful attempt whose numbers do not bear the claim
    out, reported as "not reproduced" with the numbers; not a failure of the code, so CI passes."""

    claim: str
    paper: str
    ours: str
    tolerance: str
    passed: bool | None
    reproduced: bool | None = None
    source: str = "table"  # what it was computed from: "table" (table.csv) or "runs" (the run directories' own files)


def no_checks(table: pd.DataFrame) -> list[Check]:
    """The table's checks of a reproduction whose claims are all read from the runs (`check_runs`)."""
    return []


@dataclass
class Reproduction:
    """A paper reproduction, declared: what to run (setups x seeds on top of conf/experiment/NAME.yaml,
    and a cut-down `fast` variant), what to check (`check` on the aggregated table, `check_runs` on
    the run folders, `fast_check`), and how its report shows it (`metric`, `view`, `paper_points`,
    a `plot` of its own). `reproduce` does the rest the same way for all of them."""

    name: str  # also conf/experiment/<name>.yaml
    paper: str
    setups: dict[str, list[str]]  # label -> overrides on top of the experiment
    seeds: tuple[int, ...] = (0, 1, 2)
    check: Callable[[pd.DataFrame], list[Check]] = no_checks
    fast: list[str] = field(default_factory=list)  # overrides of the cut-down variant (CI)
    fast_seeds: tuple[int, ...] = (0,)
    fast_setups: dict[str, list[str]] | None = None  # the fast variant's setups, where they differ (None: `setups`)
    plot: Callable[[pd.DataFrame, Path], None] | None = None  # a figure of its own beside the report's (table, folder)
    # a figure drawn from the run directories themselves (e.g. levels.csv's FLOPs), beside the report's (runs, folder)
    plot_runs: Callable[[list[Path], Path], None] | None = None
    metric: str = "test_acc"  # what the report's figure and compact table show
    ci: bool = False  # CI runs the fast variant (`pruneexp reproduce --ci`, `make reproduce-fast`)
    # claims read from the run directories themselves (e.g. latency.csv), beside those on the table
    check_runs: Callable[[list[Path]], list[Check]] | None = None
    # False: the fast variant is too short for the paper's claims; its numbers are reported without a verdict
    fast_verdicts: bool = True
    # the fast variant's own stated expectation, where the paper's claims need the full length (e.g.
    # 200 epochs); checked instead of `check` and `check_runs` by `--fast`
    fast_check: Callable[[pd.DataFrame], list[Check]] | None = None
    # a run every setup starts from (e.g. a network trained on another dataset): (fast, extra
    # overrides, compute) -> (overrides added to every setup, e.g. model.weights=<its weights>, the
    # coverage line of that run); `compute` False (--report-only) only finds it on disk
    prepare: Callable[[bool, list[str], bool], tuple[list[str], str]] | None = None
    # how the report names panels (network, dataset) and curves (method) from a table row; None: the
    # keys that differ between setups (report.default_view)
    view: View | None = None
    # the paper's numbers, drawn as stars in accuracy_vs_sparsity.png
    paper_points: tuple[PaperPoint, ...] = ()
    # earlier variants' folders under results/reproductions/ (folder -> what ran there): their table
    # and figures are rebuilt from their committed table.csv with this reproduction's view; their
    # checks.md stays as it was written (its claims were that recipe's)
    archives: dict[str, str] = field(default_factory=dict)


REPRODUCTIONS: Registry[Reproduction] = Registry("reproduction")


def retrain(row: pd.Series) -> str:
    """An imp setup's curve in the report's figure, by what follows each pruning round: `ticket`
    (rewound to the initial weights), `reinit`, `random mask`, or the mode's own name."""
    mode = str(row.get("schedule.retrain"))
    return {"rewind": "ticket", "random_mask": "random mask"}.get(mode, mode)


def dense_and_pruned(runs: list[Path]) -> Iterator[tuple[dict, pd.Series, pd.Series]]:
    """(config, dense level row, pruned level row) of every post-training run (levels 0 and 1 in its
    levels.csv) among `runs`; a run that has not reached its pruned level is left out."""
    import yaml

    for run in runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        levels = pd.read_csv(run / "levels.csv")
        if {0, 1} <= set(levels["level"]):
            yield cfg, levels[levels.level == 0].iloc[0], levels[levels.level == 1].iloc[0]


def pct(x: float) -> str:
    """An accuracy or error as the checks print it: 98.31 %."""
    return f"{100 * x:.2f} %"


def final_rows(table: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    """The last level named in `names` of every setup that has one (e.g. "trained", "finetuned": a
    run stopped before its end holds only earlier levels and is left out)."""
    table = table[table["name"].isin(names)]
    return table.loc[table.groupby("setup", sort=False)["level"].idxmax()].copy()


Line = tuple[str, list[float], list[float], list[float], str]  # label, x, y, y spread (or []), matplotlib format


def plot_panels(out: Path, filename: str, panels: dict[str, list[Line]], xlabel: str, ylabel: str, log_x: bool = False,
                log_y: bool = False, xticks: tuple[list[float], list[str]] | None = None) -> None:
    """One figure of side-by-side panels (e.g. one per network), each with its labelled lines (ours
    with error bars over seeds, the paper's numbers as markers), one legend below them, written
    atomically and byte-stably (plots.save) to out/filename; `xticks` (positions, labels) names
    categorical x positions (e.g. sparsity patterns). The figures of the reproductions' own
    (`Reproduction.plot`) all end here."""
    import matplotlib.ticker

    from pruneexp import plots

    plt = plots._pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), dpi=120, squeeze=False, layout="constrained")
    for ax, (title, lines) in zip(axes[0], panels.items()):
        xs = []
        for label, x, y, spread, fmt in lines:
            ax.errorbar(x, y, yerr=spread or None, fmt=fmt, capsize=3, markersize=4 if "*" not in fmt else 11, label=label)
            xs += [v for v in x if v > 0]
        if log_x:
            ax.set_xscale("log")
            ax.set_xticks(plots.log_ticks(xs))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.minorticks_off()
        if log_y:  # labels at 1, 2, 5 x 10^k: enough to read a value, never two on top of each other
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if xticks is not None:
            ax.set_xticks(*xticks)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    plots._legend_below(fig, axes[0], fontsize=8)
    plots.save(fig, out / filename)


def claim_check(claim: str, paper: str, ours: str, tolerance: str, holds: bool) -> Check:
    """A claim about the paper's numbers: PASS when ours bear it out, else "not reproduced" with the
    numbers (a faithful attempt that does not show it is reported, not failed)."""
    return Check(claim=claim, paper=paper, ours=("" if holds else "not reproduced: ") + ours, tolerance=tolerance,
                 passed=True if holds else None, reproduced=None if holds else False)


def register(spec: Reproduction) -> Reproduction:
    REPRODUCTIONS.register(spec.name)(spec)
    return spec


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from pruneexp.conf_store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def run_overrides(spec: Reproduction, setup: list[str], seed: int, fast: bool, extra: list[str]) -> list[str]:
    return [f"experiment={spec.name}", *setup, *(spec.fast if fast else []), f"seed={seed}", "quiet=true", *extra]


def _run_one(overrides: list[str]) -> str:
    """One (setup, seed) run; module-level so that a process pool can call it."""
    from pruneexp.runner import run

    return str(run(compose(overrides), console=Console(quiet=True)).directory)


def coverage_line(label: str, directory: Path, levels: int) -> str:
    """What a run holds: complete, partial (which levels) or missing."""
    from pruneexp.results import RunStore

    store = RunStore(directory)
    summary = store.read_summary() or {}
    done = sorted(int(r["level"]) for r in store.read_csv("levels.csv")) if store.path("levels.csv").exists() else []
    status = summary.get("status", "missing") if done else "missing"
    missing = [k for k in range(levels + 1) if k not in done]
    detail = f"levels {done[0]}-{done[-1]}" if done and not missing else (f"levels {done}, missing {missing}" if done else "nothing")
    return f"{label}: {status} ({detail}) in {directory.name}"


def reproduce(name: str, fast: bool = False, extra: list[str] | None = None, console: Console | None = None,
              jobs: int = 1, report_only: bool = False) -> tuple[list[Check], Path]:
    """Run every (setup, seed) of reproduction `name`, report, check; return the checks and the folder.

    `jobs` runs the seeds of a setup in that many processes (setups stay in order: the controls read
    the ticket's masks). `report_only` computes nothing: it reports and checks the runs already on
    disk, complete or not, and says in checks.md which levels each run holds; with no run of the
    experiment on disk (a fresh clone) it rebuilds the report from the committed table.csv (and
    latency.csv): the table's checks recomputed, those read from the runs carried from checks.csv.
    Either way the earlier variants' folders (`archives`) are rebuilt from their tables."""
    from pruneexp.runner import run_directory

    console = console or Console()
    spec = REPRODUCTIONS.get(name)
    started, cpu = time.perf_counter(), time.process_time()
    runs, coverage = [], []
    extra = list(extra or [])
    base = compose([f"experiment={name}", *(spec.fast if fast else []), *extra])
    results_dir = Path(base.results_dir)
    # --report-only with no run of this experiment on disk at all (a fresh clone): the committed table
    on_disk = not report_only or (results_dir / base.experiment).exists()
    if spec.prepare is not None and on_disk:
        if not report_only:
            console.print(f"[bold]{name}[/bold]{' --fast' if fast else ''}: the run every setup starts from")
        prepared, line = spec.prepare(fast, extra, not report_only)
        extra, coverage = [*prepared, *extra], [line]
    for label, setup in (spec.fast_setups if fast and spec.fast_setups else spec.setups).items() if on_disk else ():
        todo = [(seed, run_overrides(spec, setup, seed, fast, extra)) for seed in (spec.fast_seeds if fast else spec.seeds)]
        if not report_only:
            console.print(f"[bold]{name}[/bold]{' --fast' if fast else ''}: {label}, seeds {', '.join(str(s) for s, _ in todo)}"
                          + (f" ({jobs} processes)" if jobs > 1 else ""))
            if jobs > 1:
                with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                    list(pool.map(_run_one, [o for _, o in todo]))
            else:
                for _, overrides in todo:
                    _run_one(overrides)
        for seed, overrides in todo:
            cfg = compose(overrides)
            directory = run_directory(cfg)
            coverage.append(coverage_line(f"{label}, seed {seed}", directory, cfg.schedule.get("levels", 0)))
            if (directory / "levels.csv").exists():
                runs.append(directory)
    out = results_dir / "reproductions" / (name + ("_fast" if fast else ""))
    title = f"{name}{' (fast)' if fast else ''}"
    committed = out / "table.csv"
    if runs:
        table = build_report(runs, out, metric=spec.metric, title=title, view=spec.view, paper=spec.paper_points)
    elif report_only and committed.exists():
        # no run on disk (a fresh clone): the report and the table's checks from the committed table.csv;
        # what only the run directories hold (their checks, which levels each run holds) as committed
        table = read_table(committed)
        write_report(table, out, spec.metric, title, spec.view, spec.paper_points)
        if (out / LATENCY).exists():  # reports written before it was kept: their latency figures stay as committed
            write_latency(pd.read_csv(out / LATENCY), out, spec.metric, title)
        coverage = committed_coverage(out)
    else:
        raise PruneexpError(f"No run of {name} is on disk under {results_dir}"
                            + (f" and no {committed} to report from" if report_only else "") + f": run `pruneexp reproduce {name}` first.")
    console.print(rich_table(table, f"{name}: {spec.paper}"))
    if spec.plot is not None:
        spec.plot(table, out)
    if spec.plot_runs is not None and runs:
        spec.plot_runs(runs, out)
    rebuild_archives(spec, out.parent, console)
    if fast and spec.fast_check is not None:  # the fast variant's own expectation replaces the paper's claims
        checks = spec.fast_check(table)
    else:
        checks = spec.check(table)
        if fast and not spec.fast_verdicts:
            checks = [Check(c.claim, c.paper, c.ours, c.tolerance + " (full variant only)", None) for c in checks]
        if spec.check_runs is not None:
            checks += [replace(c, source="runs") for c in spec.check_runs(runs)] if runs else committed_checks(out, checks)
            if fast and not spec.fast_verdicts and runs:
                checks = [c if c.source == "table" else Check(c.claim, c.paper, c.ours, c.tolerance + " (full variant only)", None,
                                                               source="runs") for c in checks]
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    write_checks(checks, out, f"{name}{' --fast' if fast else ''}: {spec.paper}", wall, cpu, fast, spec, coverage, report_only,
                 from_table=not runs)
    console.print(checks_table(checks, f"{name}{' --fast' if fast else ''}: claims of {spec.paper}"))
    for line in coverage:
        console.print(line, highlight=False)
    console.print(f"Report and checks: {out} ({wall / 60:.1f} min)")
    return checks, out


RUNS_HEADING = "Runs behind these numbers:"


def committed_coverage(out: Path) -> list[str]:
    """The coverage lines (which levels each run holds) of the committed checks.md, for a report
    rebuilt without its runs."""
    path = out / "checks.md"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    if RUNS_HEADING not in lines:
        return []
    tail = lines[lines.index(RUNS_HEADING) + 1:]
    return [line[2:] for line in tail if line.startswith("- ")]


def committed_checks(out: Path, recomputed: list[Check]) -> list[Check]:
    """The checks read from the run directories, as the committed checks.csv holds them (its
    `source` column says which; a checks.csv written before that column: the rows whose claim the
    table's checks do not make). Carried unchanged into a report rebuilt without its runs."""
    path = out / "checks.csv"
    if not path.exists():
        return [Check("the checks read from the runs", "-", "neither the runs nor a committed checks.csv", "-", False, source="runs")]
    rows = pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")
    claims = {c.claim for c in recomputed}
    carried = [r for r in rows if r.get("source") == "runs"] if rows and "source" in rows[0] else [r for r in rows if r["claim"] not in claims]
    passed = {"PASS": True, "FAIL": False}
    return [Check(r["claim"], r["paper"], r["ours"], r["tolerance"], passed.get(r["verdict"]),
                  False if r["verdict"] == "not reproduced" else None, source="runs") for r in carried]


def rebuild_archives(spec: Reproduction, folder: Path, console: Console) -> None:
    """table.csv, table.md and accuracy_vs_sparsity.png of the earlier variants' folders, from their
    committed tables, with this reproduction's view; their checks.md and other figures stay."""
    for archive in spec.archives:
        path = folder / archive / "table.csv"
        if path.exists():
            write_report(read_table(path), folder / archive, spec.metric, f"{spec.name} ({archive.removeprefix(spec.name + '_')})",
                         spec.view, spec.paper_points)
            console.print(f"Rebuilt from its table: {folder / archive}", highlight=False)


def committed_reports(folder: Path) -> list[tuple[Path, Reproduction, bool | None]]:
    """The reports under `folder` (results/reproductions) that hold a table.csv, each with its
    reproduction and variant (True: --fast, False: full, None: an archive of an earlier variant),
    in the order `rebuild_committed` rebuilds them."""
    found = []
    for spec in (REPRODUCTIONS.get(n) for n in REPRODUCTIONS.names()):
        for name, kind in ((spec.name, False), (spec.name + "_fast", True), *((a, None) for a in spec.archives)):
            if (folder / name / "table.csv").exists():
                found.append((folder / name, spec, kind))
    return found


def rebuild_committed(folder: Path, console: Console | None = None) -> list[Path]:
    """`pruneexp reproduce NAME [--fast] --report-only` for every report under `folder` that holds a
    table.csv (the archives come with their reproduction); returns the folders rebuilt. `folder`
    must be the reproductions folder of the results directory (PRUNEEXP_RESULTS) the configs name."""
    console = console or Console(quiet=True)
    done = []
    for path, spec, kind in committed_reports(folder):
        if kind is None:
            if path not in done:  # an archive whose reproduction has no committed report of its own
                rebuild_archives(spec, folder, console)
                done += [folder / a for a in spec.archives]
            continue
        console.print(f"{spec.name}{' --fast' if kind else ''} --report-only", highlight=False)
        reproduce(spec.name, fast=kind, console=console, report_only=True)
        done += [path, *(folder / a for a in spec.archives)]
    return sorted(set(done) & {p for p, _, _ in committed_reports(folder)})


def verdict(check: Check) -> str:
    if check.passed is None:
        return "not reproduced" if check.reproduced is False else "report"
    return "PASS" if check.passed else "FAIL"


def checks_table(checks: list[Check], title: str) -> Table:
    table = Table(title=title)
    for col in ("claim", "paper", "ours", "tolerance", "verdict"):
        table.add_column(col)
    for c in checks:
        colour = {"PASS": "green", "FAIL": "red"}.get(verdict(c), "yellow")
        table.add_row(c.claim, c.paper, c.ours, c.tolerance, f"[{colour}]{verdict(c)}[/{colour}]")
    return table


def module_of(spec: Reproduction) -> str:
    """The module that declares `spec` (that of its first function not defined here)."""
    functions = (spec.check, spec.check_runs, spec.fast_check, spec.plot, spec.plot_runs, spec.prepare)
    return next((f.__module__ for f in functions if f is not None and f.__module__ != __name__), __name__)


def write_checks(checks: list[Check], out: Path, title: str, wall_s: float, cpu_s: float, fast: bool, spec: Reproduction,
                 coverage: list[str] = (), report_only: bool = False, from_table: bool = False) -> None:
    write_csv(out / "checks.csv", [dict(claim=c.claim, paper=c.paper, ours=c.ours, tolerance=c.tolerance, verdict=verdict(c),
                                        source=c.source) for c in checks])
    seeds = spec.fast_seeds if fast else spec.seeds
    command = f"pruneexp reproduce {spec.name}{' --fast' if fast else ''}{' --report-only' if report_only else ''}"
    timing = ("report only, from the committed table.csv (the runs are not on disk; the checks marked (runs) and the list "
              "of runs below are carried from the committed checks)" if from_table else
              "report only: the runs were computed beforehand" if report_only else
              f"wall time {wall_s / 60:.1f} min ({cpu_s / 60:.1f} min of CPU time in this process, {torch.get_num_threads()} thread(s))")
    setups = spec.fast_setups if fast and spec.fast_setups else spec.setups
    lines = [f"# {title}", "", f"Command: `{command}`; setups: {', '.join(setups)}; seeds: {', '.join(map(str, seeds))}; {timing}.",
             *([f"Fast variant overrides: `{' '.join(spec.fast)}`."] if fast and spec.fast else []),
             *([f"Fast variant setups ({module_of(spec).replace('.', '/')}.py): "
                + "; ".join(f"{k}: `{' '.join(v)}`" for k, v in setups.items()) + "."] if fast and spec.fast_setups else []), "",
             "| claim | paper | ours | tolerance | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {c.claim}{' (runs)' if c.source == 'runs' else ''} | {c.paper} | {c.ours} | {c.tolerance} | {verdict(c)} |"
              for c in checks]
    if coverage:
        lines += ["", RUNS_HEADING, "", *[f"- {line}" for line in coverage]]
    figures = sorted(p.name for p in out.glob("*.png"))
    lines += ["", f"The compact and the full level table: table.md; figures: {', '.join(figures)}.", ""]
    write_text(out / "checks.md", "\n".join(lines))


def passed(checks: list[Check]) -> bool:
    return all(c.passed is not False for c in checks)


# Register the reproductions: every module of this package.
import_modules(__name__)
