"""The `pruneexp` command: `run` (a Hydra app over conf/), `bench`, `list`, `report` and `reproduce`."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pruneexp.errors import PruneexpError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

USAGE = """usage: pruneexp <command> [args]

commands:
  run [overrides] [-m]   run an experiment (a Hydra app over conf/; -m sweeps, e.g. -m sparsity=0.5,0.8,0.9)
  bench RUN_DIR [hardware=NAME] [hardware.KEY=VALUE ...]
                         time a finished run's saved levels on a hardware target (no retraining)
  list                   show every registered dataset, model, criterion, schedule and hardware target
  report PATH... [--out DIR] [--metric M]
                         aggregate runs (run folders, multirun folders) over seeds: table.csv, table.md,
                         accuracy_vs_sparsity.png (in --out, default the first PATH)
  reproduce NAME [--fast] [--jobs N] [--report-only] [overrides]
                         run a paper reproduction (conf/experiment/NAME.yaml), report, check the paper's
                         claims; exit 1 if a claim fails (`pruneexp reproduce --help` lists the names).
                         --jobs N runs seeds in N processes; --report-only checks the runs already on disk
  reproduce --ci         the fast variant of every reproduction that CI checks

`pruneexp run --help` shows the config groups and the resolved config."""


def fail(message: str) -> None:
    """Print a user-facing error as one paragraph (no traceback) and exit with status 2."""
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(2)


def run_command(args: list[str]) -> None:
    import hydra
    from omegaconf import DictConfig

    from pruneexp.config import register_configs

    register_configs()

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def app(cfg: DictConfig) -> None:
        from pruneexp.runner import run

        try:
            run(cfg)
        except PruneexpError as err:
            fail(str(err))

    sys.argv = ["pruneexp run", *args]
    app()


def bench_command(args: list[str]) -> None:
    """`pruneexp bench RUN_DIR [hardware=NAME] [hardware.KEY=VALUE ...]` (see pruneexp.bench)."""
    from pruneexp.bench import bench

    if not args or args[0].startswith("-") or "=" in args[0]:
        fail("usage: pruneexp bench RUN_DIR [hardware=NAME] [hardware.KEY=VALUE ...]")
    bench(Path(args[0]), args[1:], CONF_DIR)


def list_command() -> None:
    from pruneexp.data import DATASETS
    from pruneexp.models import MODELS, torchvision_model_names
    from pruneexp.pruning.criteria import CRITERIA, supported_granularities
    from pruneexp.regularizers import REGULARIZERS
    from pruneexp.schedules import SCHEDULES

    table = Table(title="pruneexp registry")
    table.add_column("kind")
    table.add_column("name")
    table.add_column("notes")
    for name in DATASETS:
        table.add_row("dataset", name, "")
    for name in MODELS:
        table.add_row("model", name, "")
    table.add_row("model", "torchvision", f"{len(torchvision_model_names())} torchvision classification models: model=torchvision model.name=resnet18")
    for name in CRITERIA:
        variants = "".join(f"; variant={v}: " + ", ".join(g) for v, g in CRITERIA.meta(name)["variants"].items())
        table.add_row("criterion", name, "granularities: " + ", ".join(supported_granularities(name)) + variants)
    for name in SCHEDULES:
        table.add_row("schedule", name, "")
    for name in REGULARIZERS:
        table.add_row("regularizer", name, "granularities: " + ", ".join(REGULARIZERS.meta(name)["granularities"])
                      + ("" if name == "none" else "; with schedule=regularized"))
    for path in sorted((CONF_DIR / "hardware").glob("*.yaml")):
        table.add_row("hardware", path.stem, "")
    Console().print(table)


def report_command(args: list[str]) -> None:
    import argparse

    from pruneexp.report import build_report, rich_table

    parser = argparse.ArgumentParser(prog="pruneexp report")
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--metric", default="test_acc", help="plotted: test_acc (final) or test_acc_at_best (early stop)")
    opts = parser.parse_args(args)
    out = opts.out or opts.paths[0]
    table = build_report(opts.paths, out, metric=opts.metric)
    console = Console()
    console.print(rich_table(table, f"{len(table)} rows from {', '.join(map(str, opts.paths))}"))
    console.print(f"Wrote {out / 'table.csv'}, {out / 'table.md'}, {out / 'accuracy_vs_sparsity.png'}")


def reproduce_command(args: list[str]) -> None:
    import argparse

    from pruneexp.reproduce import REPRODUCTIONS, passed, reproduce

    if args == ["--ci"]:  # CI: the fast variant of every reproduction registered with ci=True
        names = [n for n in REPRODUCTIONS if REPRODUCTIONS.get(n).ci]
        results = {n: passed(reproduce(n, fast=True)[0]) for n in names}
        Console().print("CI reproductions: " + ", ".join(f"{n} {'PASS' if ok else 'FAIL'}" for n, ok in results.items()))
        if not all(results.values()):
            raise SystemExit(1)
        return
    parser = argparse.ArgumentParser(prog="pruneexp reproduce", description="Run a paper reproduction, report, check its claims.")
    parser.add_argument("name", choices=REPRODUCTIONS.names(), metavar="NAME", help=f"one of {', '.join(REPRODUCTIONS.names())}")
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value) on top of the reproduction's")
    parser.add_argument("--fast", action="store_true", help="the cut-down variant (CI)")
    parser.add_argument("--jobs", type=int, default=1, help="run the seeds of a setup in this many processes")
    parser.add_argument("--report-only", action="store_true", help="compute nothing: report and check the runs on disk")
    opts = parser.parse_intermixed_args(args)
    bad = [o for o in opts.overrides if "=" not in o]
    if bad:
        fail(f"'{bad[0]}' is not an override (key=value); usage: pruneexp reproduce NAME [--fast] [--jobs N] [--report-only] [overrides].")
    if opts.jobs < 1:
        fail(f"--jobs {opts.jobs} must be at least 1.")
    checks, _ = reproduce(opts.name, fast=opts.fast, extra=opts.overrides, jobs=opts.jobs, report_only=opts.report_only)
    if not passed(checks):
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    try:
        if command == "run":
            run_command(rest)
        elif command == "bench":
            bench_command(rest)
        elif command == "list":
            list_command()
        elif command == "report":
            report_command(rest)
        elif command == "reproduce":
            reproduce_command(rest)
        else:
            fail(f"Unknown command '{command}'. Commands: run, bench, list, report, reproduce. See `pruneexp --help`.")
    except PruneexpError as err:
        fail(str(err))


if __name__ == "__main__":
    main()
