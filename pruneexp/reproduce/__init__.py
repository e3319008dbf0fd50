"""`pruneexp reproduce NAME [--fast]`: run a paper's configs (conf/experiment/NAME.yaml plus the
setups and seeds below), build the report, check the paper's claims under stated tolerances, and
print and write the pass/fail table next to the report (results/reproductions/NAME[_fast]/)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from pruneexp.registry import Registry
from pruneexp.report import build_report, rich_table
from pruneexp.results.store import write_csv, write_text

CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"


@dataclass
class Check:
    """One claim of the paper, our number, and the verdict (None: reported without a verdict)."""

    claim: str
    paper: str
    ours: str
    tolerance: str
    passed: bool | None


@dataclass
class Reproduction:
    name: str  # also conf/experiment/<name>.yaml
    paper: str
    setups: dict[str, list[str]]  # label -> overrides on top of the experiment
    seeds: tuple[int, ...]
    check: Callable[[pd.DataFrame], list[Check]]
    fast: list[str] = field(default_factory=list)  # overrides of the cut-down variant (CI)
    fast_seeds: tuple[int, ...] = (0,)
    metric: str = "test_acc_at_best"  # what the plot shows


REPRODUCTIONS: Registry[Reproduction] = Registry("reproduction")


def register(spec: Reproduction) -> Reproduction:
    REPRODUCTIONS.register(spec.name)(spec)
    return spec


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from pruneexp.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def reproduce(name: str, fast: bool = False, extra: list[str] | None = None, console: Console | None = None) -> tuple[list[Check], Path]:
    """Run every (setup, seed) of reproduction `name`, report, check; return the checks and the folder."""
    from pruneexp.runner import run

    console = console or Console()
    spec = REPRODUCTIONS.get(name)
    started, cpu = time.perf_counter(), time.process_time()
    runs = []
    for label, setup in spec.setups.items():
        for seed in spec.fast_seeds if fast else spec.seeds:
            cfg = compose([f"experiment={name}", *setup, *(spec.fast if fast else []), f"seed={seed}", "quiet=true", *(extra or [])])
            console.print(f"[bold]{name}[/bold]{' --fast' if fast else ''}: {label}, seed {seed}")
            runs.append(run(cfg, console=Console(quiet=True)).directory)
    out = Path(cfg.results_dir) / "reproductions" / (name + ("_fast" if fast else ""))
    table = build_report(runs, out, metric=spec.metric, title=f"{name}{' (fast)' if fast else ''}")
    console.print(rich_table(table, f"{name}: {spec.paper}"))
    checks = spec.check(table)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    write_checks(checks, out, f"{name}{' --fast' if fast else ''}: {spec.paper}", wall, cpu, fast, spec)
    console.print(checks_table(checks, f"{name}{' --fast' if fast else ''}: claims of {spec.paper}"))
    console.print(f"Report and checks: {out} ({wall / 60:.1f} min)")
    return checks, out


def verdict(check: Check) -> str:
    return "report" if check.passed is None else ("PASS" if check.passed else "FAIL")


def checks_table(checks: list[Check], title: str) -> Table:
    table = Table(title=title)
    for col in ("claim", "paper", "ours", "tolerance", "verdict"):
        table.add_column(col)
    for c in checks:
        colour = {"PASS": "green", "FAIL": "red"}.get(verdict(c), "yellow")
        table.add_row(c.claim, c.paper, c.ours, c.tolerance, f"[{colour}]{verdict(c)}[/{colour}]")
    return table


def write_checks(checks: list[Check], out: Path, title: str, wall_s: float, cpu_s: float, fast: bool, spec: Reproduction) -> None:
    write_csv(out / "checks.csv", [dict(claim=c.claim, paper=c.paper, ours=c.ours, tolerance=c.tolerance, verdict=verdict(c)) for c in checks])
    seeds = spec.fast_seeds if fast else spec.seeds
    lines = [f"# {title}", "", f"Command: `pruneexp reproduce {spec.name}{' --fast' if fast else ''}`; "
             f"setups: {', '.join(spec.setups)}; seeds: {', '.join(map(str, seeds))}; wall time {wall_s / 60:.1f} min "
             f"({cpu_s / 60:.1f} min of CPU time, {torch.get_num_threads()} thread(s)).",
             *([f"Fast variant overrides: `{' '.join(spec.fast)}`."] if fast else []), "",
             "| claim | paper | ours | tolerance | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {c.claim} | {c.paper} | {c.ours} | {c.tolerance} | {verdict(c)} |" for c in checks]
    lines += ["", "The level table is table.md; the plot accuracy_vs_sparsity.png.", ""]
    write_text(out / "checks.md", "\n".join(lines))


def passed(checks: list[Check]) -> bool:
    return all(c.passed is not False for c in checks)


# Register the reproductions (one module each).
from pruneexp.reproduce import lth_lenet, mnist1d_lottery, renda_rewinding  # noqa: E402,F401
