"""`pruneexp reproduce NAME [--fast]`: run a paper's configs (conf/experiment/NAME.yaml plus the
setups and seeds below), build the report, check the paper's claims under stated tolerances, and
print and write the pass/fail table next to the report (results/reproductions/NAME[_fast]/)."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from pruneexp.errors import PruneexpError
from pruneexp.registry import Registry, import_modules
from pruneexp.report import build_report, rich_table
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


@dataclass
class Reproduction:
    name: str  # also conf/experiment/<name>.yaml
    paper: str
    setups: dict[str, list[str]]  # label -> overrides on top of the experiment
    seeds: tuple[int, ...]
    check: Callable[[pd.DataFrame], list[Check]]
    fast: list[str] = field(default_factory=list)  # overrides of the cut-down variant (CI)
    fast_seeds: tuple[int, ...] = (0,)
    fast_setups: dict[str, list[str]] | None = None  # the fast variant's setups, where they differ (None: `setups`)
    plot: Callable[[pd.DataFrame, Path], None] | None = None  # a figure of its own beside the report's (table, folder)
    # a figure drawn from the run directories themselves (e.g. levels.csv's FLOPs), beside the report's (runs, folder)
    plot_runs: Callable[[list[Path], Path], None] | None = None
    metric: str = "test_acc_at_best"  # what the plot shows
    ci: bool = False  # CI runs the fast variant (`pruneexp reproduce --ci`, `make reproduce-fast`)
    # claims read from the run directories themselves (e.g. latency.csv), beside those on the table
    check_runs: Callable[[list[Path]], list[Check]] | None = None
    # False: the fast variant is too short for the paper's claims; its numbers are reported without a verdict
    fast_verdicts: bool = True
    # the fast variant's own stated expectation, where the paper's claims need the full length (e.g.
    # 200 epochs); checked instead of `check` and `check_runs` by `--fast`
    fast_check: Callable[[pd.DataFrame], list[Check]] | None = None
    # a run every setup starts from (e.g. a network trained on another dataset): (fast, extra
    # overrides, compute) -> (overrides added to every setup, e.g. model.init_from=<its weights>, the
    # coverage line of that run); `compute` False (--report-only) only finds it on disk
    prepare: Callable[[bool, list[str], bool], tuple[list[str], str]] | None = None


REPRODUCTIONS: Registry[Reproduction] = Registry("reproduction")


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
    with error bars over seeds, the paper's numbers as markers), written atomically to out/filename;
    `xticks` (positions, labels) names categorical x positions (e.g. sparsity patterns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pruneexp.io import atomic_write

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), dpi=120, squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels.items()):
        for label, x, y, spread, fmt in lines:
            ax.errorbar(x, y, yerr=spread or None, fmt=fmt, capsize=3, label=label)
        if log_x:
            ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        if xticks is not None:
            ax.set_xticks(*xticks)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out / filename, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


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
    disk, complete or not, and says in checks.md which levels each run holds."""
    from pruneexp.runner import run_directory

    console = console or Console()
    spec = REPRODUCTIONS.get(name)
    started, cpu = time.perf_counter(), time.process_time()
    runs, coverage = [], []
    extra = list(extra or [])
    if spec.prepare is not None:
        if not report_only:
            console.print(f"[bold]{name}[/bold]{' --fast' if fast else ''}: the run every setup starts from")
        prepared, line = spec.prepare(fast, extra, not report_only)
        extra, coverage = [*prepared, *extra], [line]
    for label, setup in (spec.fast_setups if fast and spec.fast_setups else spec.setups).items():
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
    if not runs:
        raise PruneexpError(f"No run of {name} is on disk under {cfg.results_dir}: run `pruneexp reproduce {name}` first.")
    out = Path(cfg.results_dir) / "reproductions" / (name + ("_fast" if fast else ""))
    table = build_report(runs, out, metric=spec.metric, title=f"{name}{' (fast)' if fast else ''}")
    console.print(rich_table(table, f"{name}: {spec.paper}"))
    if spec.plot is not None:
        spec.plot(table, out)
    if spec.plot_runs is not None:
        spec.plot_runs(runs, out)
    if fast and spec.fast_check is not None:  # the fast variant's own expectation replaces the paper's claims
        checks = spec.fast_check(table)
    else:
        checks = spec.check(table) + (spec.check_runs(runs) if spec.check_runs is not None else [])
    if fast and not spec.fast_verdicts and spec.fast_check is None:
        checks = [Check(c.claim, c.paper, c.ours, c.tolerance + " (full variant only)", None) for c in checks]
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    write_checks(checks, out, f"{name}{' --fast' if fast else ''}: {spec.paper}", wall, cpu, fast, spec, coverage, report_only)
    console.print(checks_table(checks, f"{name}{' --fast' if fast else ''}: claims of {spec.paper}"))
    for line in coverage:
        console.print(line, highlight=False)
    console.print(f"Report and checks: {out} ({wall / 60:.1f} min)")
    return checks, out


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


def write_checks(checks: list[Check], out: Path, title: str, wall_s: float, cpu_s: float, fast: bool, spec: Reproduction,
                 coverage: list[str] = (), report_only: bool = False) -> None:
    write_csv(out / "checks.csv", [dict(claim=c.claim, paper=c.paper, ours=c.ours, tolerance=c.tolerance, verdict=verdict(c)) for c in checks])
    seeds = spec.fast_seeds if fast else spec.seeds
    command = f"pruneexp reproduce {spec.name}{' --fast' if fast else ''}{' --report-only' if report_only else ''}"
    timing = ("report only: the runs were computed beforehand" if report_only else
              f"wall time {wall_s / 60:.1f} min ({cpu_s / 60:.1f} min of CPU time in this process, {torch.get_num_threads()} thread(s))")
    setups = spec.fast_setups if fast and spec.fast_setups else spec.setups
    lines = [f"# {title}", "", f"Command: `{command}`; setups: {', '.join(setups)}; seeds: {', '.join(map(str, seeds))}; {timing}.",
             *([f"Fast variant overrides: `{' '.join(spec.fast)}`."] if fast and spec.fast else []),
             *([f"Fast variant setups ({spec.check.__module__.replace('.', '/')}.py): "
                + "; ".join(f"{k}: `{' '.join(v)}`" for k, v in setups.items()) + "."] if fast and spec.fast_setups else []), "",
             "| claim | paper | ours | tolerance | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {c.claim} | {c.paper} | {c.ours} | {c.tolerance} | {verdict(c)} |" for c in checks]
    if coverage:
        lines += ["", "Runs behind these numbers:", "", *[f"- {line}" for line in coverage]]
    lines += ["", "The level table is table.md; the plot accuracy_vs_sparsity.png.", ""]
    write_text(out / "checks.md", "\n".join(lines))


def passed(checks: list[Check]) -> bool:
    return all(c.passed is not False for c in checks)


# Register the reproductions: every module of this package.
import_modules(__name__)
