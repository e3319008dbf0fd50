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
  report PATH... [--out DIR] [--metric M] [--x auto|sweep|levels] [--by KEY,...] [--include-incomplete]
                         aggregate complete runs (run folders, multirun folders) over seeds: table.csv,
                         table.md, accuracy_vs_sparsity.png, latency plots (in --out, default the first PATH)
  reproduce NAME [--fast] [--jobs N] [--report-only] [overrides]
                         run a paper reproduction (conf/experiment/NAME.yaml), report, check the paper's
                         claims; exit 1 if a claim fails (`pruneexp reproduce --help` lists the names).
                         --jobs N runs seeds in N processes; --report-only checks the runs already on disk
                         (none there, e.g. a fresh clone: rebuilds the committed report from its table.csv)
  reproduce --ci         the fast variant of every reproduction that CI checks

`pruneexp run --help` shows the config groups and the resolved config.

exit status: 0 success; 2 an error (bad input, Hydra's config errors included, a failed or
diverged run, a damaged run directory); 1 only from `reproduce`, when a paper's claim fails."""

ERROR_EXIT = 2  # every error, ours or Hydra's; 1 is reserved for a failed reproduction claim


def fail(message: str) -> None:
    """Print a user-facing error as one paragraph (no traceback) and exit with status 2."""
    from rich.markup import escape

    from pruneexp.distributed import record_error

    record_error(message)  # under torchrun: the launcher's error names it
    Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(ERROR_EXIT)


def run_command(args: list[str]) -> None:
    import hydra
    from omegaconf import DictConfig

    from pruneexp.conf_store import register_configs

    register_configs()

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def app(cfg: DictConfig) -> float | None:
        """One job: run the experiment; return the final level's validation accuracy (the value a
        Hydra sweeper such as Optuna maximises; selection never reads the test split)."""
        from pruneexp.distributed import Ranks
        from pruneexp.report import write_job_link
        from pruneexp.runner import run, run_directory
        from pruneexp.validate import typed_config

        try:
            if cfg.hardware.get("devices", 1) > 1 and Ranks.from_env().world == 1:
                return launch_processes(cfg)  # hardware.devices=N: this job again, in N processes under torchrun
            if Ranks.from_env().rank == 0:
                write_job_link(run_directory(typed_config(cfg)))  # a multirun folder leads to its runs (pruneexp report)
            outcome = run(cfg)
        except PruneexpError as err:
            fail(str(err))
        except OSError as err:  # a full disk, a folder that vanished: the file and the reason, no traceback
            fail(f"{err.filename or ''}: {err.strerror or err}".lstrip(": "))
        except RuntimeError as err:  # a collective whose peer died: one line (the launcher names that rank), no traceback
            from pruneexp.distributed import lost_peer

            if (said := lost_peer(err)) is None:
                raise
            fail(said)
        if not outcome.levels:
            return None  # skipped (skip_unsupported=true)
        return float(outcome.levels[-1]["val_acc"])

    sys.argv = ["pruneexp run", *args]
    try:
        app()
    except SystemExit as exit_:
        if exit_.code == 1:  # Hydra reports its own errors (unknown group, bad override) with status 1
            raise SystemExit(ERROR_EXIT) from None
        raise
    from pruneexp.distributed import close

    close()  # several processes: leave the process group once every job of this process is done


def launch_processes(cfg) -> float | None:
    """`hardware.devices=N` outside torchrun: validate once, run this job's overrides as
    `python -m pruneexp run ...` in N processes through torchrun's launcher (each process sees
    RANK / WORLD_SIZE and joins the run's process group), then read the run's final validation
    accuracy from its levels.csv (what the sweeper maximises)."""
    from hydra.core.hydra_config import HydraConfig

    from pruneexp.distributed import launch
    from pruneexp.report import write_job_link
    from pruneexp.results import RunStore
    from pruneexp.runner import run_directory
    from pruneexp.validate import typed_config, validate

    validate(cfg)  # a bad config fails here, once, before any process starts
    directory = run_directory(typed_config(cfg))
    write_job_link(directory)
    launch(int(cfg.hardware.devices), ["run", *HydraConfig.get().overrides.task])
    rows = RunStore(directory).read_csv("levels.csv")
    return float(rows[-1]["val_acc"]) if rows else None


def bench_command(args: list[str]) -> None:
    """`pruneexp bench RUN_DIR [hardware=NAME] [hardware.KEY=VALUE ...]` (see pruneexp.bench)."""
    from pruneexp.bench import bench

    if not args or args[0].startswith("-") or "=" in args[0]:
        fail("usage: pruneexp bench RUN_DIR [hardware=NAME] [hardware.KEY=VALUE ...]")
    bench(Path(args[0]), args[1:], CONF_DIR)


# The input a model is listed with: its usual dataset (MLPs and LeNet-5 on MNIST, conv nets on CIFAR-10).
LIST_SHAPES = {"lenet_300_100": (1, 28, 28), "mlp": (1, 28, 28), "residual_mlp": (1, 28, 28), "lenet5": (1, 28, 28),
               "vit": (1, 28, 28), "gpt": (64,)}  # gpt: 64 token ids (its classes are the vocabulary)


SCHEDULE_NOTES = {
    "oneshot": "train, prune once to `sparsity`, fine-tune (Han et al. 2015); levels dense, pruned, finetuned",
    "imp": "prune schedule.rate of the remaining weights per level; retrain: rewind, lr_rewind, finetune, reinit, random_mask (Frankle & Carbin 2019; Renda et al. 2020)",
    "gmp": "sparsity raised along a cubic during training (Zhu & Gupta 2017); a level per update",
    "posttrain": "train or load dense, prune block by block on calibration data, no retraining (SparseGPT / Wanda); levels dense, pruned",
    "at_init": "score the untrained network (SNIP, GraSP, SynFlow, ...), prune to `sparsity`, train the sparse network",
}


def model_note(name: str) -> str:
    """'266,610 params (266,200 prunable) on (1, 28, 28), 10 classes' for a registered model."""
    from pruneexp.models import create_model
    from pruneexp.pruning.masks import prunable_weights

    shape = LIST_SHAPES.get(name, (3, 32, 32))
    if name == "hf":
        return "a Hugging Face causal LM from model.path (a local directory; needs the hf extra: transformers)"
    try:
        model = create_model(name, shape, 10)
    except PruneexpError as err:
        return str(err)
    total = sum(p.numel() for p in model.parameters())
    prunable = sum(p.numel() for p in prunable_weights(model).values())
    return f"{total:,} params ({prunable:,} prunable) on input {shape}, 10 classes"


def list_command() -> None:
    """`pruneexp list`: every registered dataset (size, input shape), model (parameter count), criterion
    (granularities), schedule and hardware target."""
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
        meta = DATASETS.meta(name)
        table.add_row("dataset", name, f"{meta.get('size', '')}; input {meta.get('shape', '?')}, {meta.get('classes', '?')} classes")
    for name in MODELS:
        table.add_row("model", name, model_note(name))
    table.add_row("model", "torchvision", f"{len(torchvision_model_names())} torchvision classification models: model=torchvision model.name=resnet18")
    for name in CRITERIA:
        variants = "".join(f"; variant={v}: " + ", ".join(g) for v, g in CRITERIA.meta(name)["variants"].items())
        table.add_row("criterion", name, "granularities: " + ", ".join(supported_granularities(name)) + variants)
    for name in SCHEDULES:
        table.add_row("schedule", name, SCHEDULE_NOTES.get(name, ""))
    for name in REGULARIZERS:
        table.add_row("regularizer", name, "granularities: " + ", ".join(REGULARIZERS.meta(name)["granularities"])
                      + ("" if name == "none" else "; with schedule=regularized"))
    for path in sorted((CONF_DIR / "hardware").glob("*.yaml")):
        table.add_row("hardware", path.stem, next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), ""))
    for path in sorted((CONF_DIR / "logger").glob("*.yaml")):
        table.add_row("logger", path.stem, next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), ""))
    Console().print(table)


def report_command(args: list[str]) -> None:
    """`pruneexp report PATH... [--out DIR] [--metric M] [--x auto|sweep|levels] [--by KEY,...] [--include-incomplete]`."""
    import argparse

    from pruneexp.report import make_report, rich_table

    parser = argparse.ArgumentParser(prog="pruneexp report")
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--metric", default="test_acc", help="plotted: test_acc (final) or test_acc_at_best (early stop)")
    parser.add_argument("--x", default="auto", choices=("auto", "sweep", "levels"),
                        help="sweep: final level of each run across runs (a swept sparsity); levels: each run's levels (imp, gmp); auto: decided from the runs")
    parser.add_argument("--by", default=None, help="comma-separated config keys that tell the curves apart, e.g. criterion.name,prune.scope")
    parser.add_argument("--include-incomplete", action="store_true",
                        help="include runs whose status is running, partial or failed (marked *); by default they are left out")
    opts = parser.parse_args(args)
    out = opts.out or opts.paths[0]
    by = None if opts.by is None else [k.strip() for k in opts.by.split(",") if k.strip()]
    report = make_report(opts.paths, out, metric=opts.metric, x=opts.x, by=by,
                         incomplete="mark" if opts.include_incomplete else "skip")
    console = Console()
    console.print(rich_table(report.table, f"{len(report.table)} rows from {len(report.runs)} runs ({report.picture} picture)"))
    for line in report.skipped:
        console.print(f"[yellow]left out, not complete[/yellow]: {line} (--include-incomplete to include it, marked *)", highlight=False, soft_wrap=True)
    for line in report.incomplete:
        console.print(f"[yellow]included, not complete (marked *)[/yellow]: {line}", highlight=False, soft_wrap=True)
    for line in report.missing:
        console.print(f"[yellow]no run yet[/yellow]: {line}", highlight=False, soft_wrap=True)
    console.print("Wrote " + ", ".join(str(f) for f in report.files), highlight=False, soft_wrap=True)


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
    parser.add_argument("--report-only", action="store_true", help="compute nothing: report and check the runs on disk (none there: rebuild from the committed table.csv)")
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
            if rest:
                fail(f"pruneexp list takes no arguments (got {' '.join(rest)}).")
            list_command()
        elif command == "report":
            report_command(rest)
        elif command == "reproduce":
            reproduce_command(rest)
        else:
            fail(f"Unknown command '{command}'. Commands: run, bench, list, report, reproduce. See `pruneexp --help`.")
    except PruneexpError as err:
        fail(str(err))
    except OSError as err:  # a folder that cannot be written, a full disk: the file and the reason
        fail(f"{err.filename or ''}: {err.strerror or err}".lstrip(": "))


if __name__ == "__main__":
    main()
