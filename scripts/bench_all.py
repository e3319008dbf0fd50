"""`make bench`: the project's speed benchmarks one after another (one heavy process at a time), and
one table of every figure beside its goal and whether it holds, with the machine and thread count.

Each benchmark is a script here, run as its own process with `--json PATH` (the format is in
benchgoals.py); each figure is a ratio measured within that one process (pruneexp against a
hand-written loop, many updates against few, tied scores against random ones), never an absolute
time, so that what a slower or busier machine changes cancels out. Each script still runs alone
and prints what it always did. A benchmark not in this checkout (the post-training and scale
benchmarks of issues 24 and 25, where they have not landed) is a row that says so; one that fails
is a row with its error, and the exit status is 1.

Not part of CI: a shared machine is too noisy for a timed gate. The 1-minute load average before
and after each benchmark is in the table's notes; quote it with the figures.

    PRUNEEXP_DATA=/work/shared/data python scripts/bench_all.py [--only bench_gmp ...] [--quick] [--clock wall|cpu] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchgoals import holds, load_average  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent
# name -> (arguments of the full run, arguments of --quick, a smoke run of the table's plumbing)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "bench_select": (["--repeats", "30"], ["--repeats", "3"]),
    "bench_train": (["--threads", "1", "--rounds", "5"], ["--threads", "1", "--rounds", "1"]),
    "bench_level": (["--iters", "3000", "--repeats", "3"], ["--iters", "300", "--repeats", "1"]),
    "bench_gmp": (["--repeats", "3"], ["--repeats", "1"]),
    "bench_latency": (["--threads", "1", "--out", "{tmp}"], ["--threads", "1", "--quick", "--out", "{tmp}"]),
    "bench_posttrain": ([], ["--nsamples", "8", "--seqlen", "128"]),  # issue 24; the references from $PRUNEEXP_REF_SPARSEGPT, $PRUNEEXP_REF_WANDA
    "bench_scale": (["a", "b", "c", "d"], ["a", "b", "c", "d", "--iters", "300", "--steps", "2", "--repeats", "1"]),  # issue 25
}
CLOCKED = ("bench_level", "bench_gmp")  # the ones that take --clock wall|cpu
COLUMNS = ("benchmark", "figure", "value", "goal", "holds", "goal from", "threads", "detail")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    """The checkout's HEAD (with `+changes` where the work tree differs), or '?' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=SCRIPTS, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=SCRIPTS, capture_output=True, text=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def run_benchmark(name: str, args: list[str], tmp: Path) -> tuple[list[dict], dict]:
    """Run scripts/<name>.py with `args` and `--json`; its table rows and a record of the run
    (wall time, load averages, exit status, its printed output)."""
    script = SCRIPTS / f"{name}.py"
    info = {"name": name, "wall_s": 0.0, "load": "", "rc": None, "output": ""}
    if not script.exists():
        return [row(name, "(not in this checkout)", None, None, None, "", "")], info
    out = tmp / f"{name}.json"
    work = tmp / name
    work.mkdir(exist_ok=True)
    cmd = [sys.executable, str(script), *(a.format(tmp=work) for a in args), "--json", str(out)]
    before, t0 = load_average(), time.perf_counter()
    print(f"{name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    info.update(wall_s=time.perf_counter() - t0, load=f"{before} -> {load_average()}", rc=proc.returncode,
                output=proc.stdout + (proc.stderr if proc.returncode else ""))
    print(f"{name}: exit {proc.returncode}, {info['wall_s']:.0f} s, load {info['load']}", file=sys.stderr, flush=True)
    if proc.returncode or not out.exists():
        why = (proc.stderr.strip().splitlines() or ["no --json output"])[-1]
        return [row(name, f"(failed: exit {proc.returncode}: {why})", None, None, False, "", "")], info
    data = json.loads(out.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("figures"), list):
        return [row(name, "(failed: its --json output is not benchgoals.py's format)", None, None, False, "", "")], info
    return [row(name, f["figure"], f["value"], f["goal"], holds(f["value"], f["goal"]), f["source"], f.get("detail", ""),
                data.get("threads")) for f in data["figures"]], info


def row(benchmark, figure, value, goal, ok, source, detail, threads=None) -> dict:
    return dict(zip(COLUMNS, (benchmark, figure, value, goal, ok, source, threads, detail)))


def table(rows: list[dict]) -> str:
    """The rows as one markdown table (value to 3 decimals; holds: yes / NO / - for no goal)."""
    def cell(key, v):
        if key == "value":
            return "-" if v is None else f"{v:.3f}"
        if key == "holds":
            return {True: "yes", False: "**NO**", None: "-"}[v]
        return "-" if v is None or v == "" else str(v).replace("|", "/")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(k, r[k]) for k in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def report(rows: list[dict], runs: list[dict], quick: bool, started: str) -> str:
    """The table with its header (machine, threads, commit, torch) and notes (wall time and load of each run)."""
    import torch

    goals = [r for r in rows if r["goal"] is not None]
    threads = sorted({r["threads"] for r in rows if r["threads"] is not None})
    head = (f"# `make bench`{' (--quick)' if quick else ''}: speed figures against their goals\n\n"
            f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; threads per benchmark: "
            f"{', '.join(map(str, threads)) or '?'}; torch {torch.__version__}, python {platform.python_version()}; "
            f"commit {commit()}; started {started}\n\n"
            f"{sum(1 for r in goals if r['holds'])} of {len(goals)} goals hold. Every figure is a ratio measured within "
            f"one process; a figure without a goal is reported as measured.\n\n")
    notes = "\n".join(f"- {r['name']}: " + ("not in this checkout" if r["rc"] is None else
                                            f"{r['wall_s']:.0f} s wall, 1-minute load average {r['load']}, exit {r['rc']}")
                      for r in runs)
    return head + table(rows) + "\n\n" + notes + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run these benchmarks only")
    parser.add_argument("--quick", action="store_true", help="short runs of every benchmark (checks the plumbing, not the goals)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="bench_level's and bench_gmp's clock: wall time, or CPU time on a machine shared with other work")
    parser.add_argument("--out", default=None, metavar="FILE.md", help="also write the table and every benchmark's printed output")
    opts = parser.parse_args()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows: list[dict] = []
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pruneexp-bench-") as tmp:
        for name in opts.only or BENCHMARKS:
            args = BENCHMARKS[name][1 if opts.quick else 0] + (["--clock", opts.clock] if name in CLOCKED else [])
            got, info = run_benchmark(name, args, Path(tmp))
            rows += got
            runs.append(info)
    text = report(rows, runs, opts.quick, started)
    print(text)
    if opts.out:
        from pruneexp.io import atomic_write

        outputs = "\n".join(f"## {r['name']}\n\n```\n{r['output'].rstrip()}\n```\n" for r in runs if r["rc"] is not None)
        atomic_write(opts.out, lambda p: Path(p).write_text(text + "\n# What each benchmark printed\n\n" + outputs))
    sys.exit(1 if any(r["figure"].startswith("(failed") for r in rows) else 0)


if __name__ == "__main__":
    main()
