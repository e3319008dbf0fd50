"""Is a latency figure stable enough to trust? Call `pruneexp bench RUN_DIR` N times (separate
processes, as a user would) and report, per (level, form, batch size), the coefficient of variation
of the median across the calls: CV = std(medians) / mean(medians). Issue #5 asks for the dense
median's CV to stay under 5 % on a quiet machine.

    python scripts/bench_stability.py [--run-dir RUN] [--calls 5] [--hardware cpu_1thread] [--out results/benchmarks]

Without --run-dir a short default run (lenet_300_100 on digits) is made in a temporary results dir.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchgoals import load_average  # noqa: E402


def main() -> None:
    """Make or take a run, call `pruneexp bench` N times, write the CV table (.md) and all rows (.csv)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--hardware", default="cpu_1thread")
    ap.add_argument("--out", default="results/benchmarks")
    ap.add_argument("overrides", nargs="*", help="extra hardware.KEY=VALUE overrides for every bench call")
    args = ap.parse_args()
    env = dict(os.environ)
    run_dir = args.run_dir
    if run_dir is None:
        tmp = tempfile.mkdtemp(prefix="pruneexp-stability-")
        env["PRUNEEXP_RESULTS"] = tmp
        subprocess.run([sys.executable, "-m", "pruneexp", "run", "train.duration=5ep", "schedule.finetune.duration=2ep",
                        "quiet=true"], env=env, check=True, capture_output=True, cwd=tmp)
        run_dir = str(next(Path(tmp).glob("default/*/levels.csv")).parent)
    frames, loads = [], []
    for i in range(args.calls):
        loads.append(load_average())
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pruneexp", "bench", run_dir, f"hardware={args.hardware}", *args.overrides],
                              env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr)
        df = pd.read_csv(Path(run_dir) / f"latency_{args.hardware}.csv")
        df["call"] = i
        frames.append(df)
        print(f"call {i}: {time.perf_counter() - t0:.1f}s, load average {loads[-1]}", file=sys.stderr, flush=True)
    all_rows = pd.concat(frames)
    ok = all_rows[all_rows.status == "ok"]
    stats = []
    for (level, form, batch), g in ok.groupby(["level", "form", "batch_size"]):
        med = g["median_ms"].tolist()
        mean = statistics.fmean(med)
        stats.append(dict(level=level, form=form, batch=batch, calls=len(med), mean_of_medians_ms=mean,
                          min_ms=min(med), max_ms=max(med), cv_of_medians=statistics.pstdev(med) / mean,
                          mean_within_call_cv=g["cv"].mean()))
    table = pd.DataFrame(stats)
    r0 = frames[0].iloc[0]
    text = (f"# Stability of `pruneexp bench` medians over {args.calls} calls\n\n"
            f"command: `python scripts/bench_stability.py --calls {args.calls} --hardware {args.hardware}"
            f"{' ' + ' '.join(args.overrides) if args.overrides else ''}`  \n"
            f"machine: {r0['machine']}, {r0['device_name']}, threads {r0['threads']}, dtype {r0['dtype']}, torch {r0['torch']}  \n"
            f"1-minute load average before each call: {', '.join(loads)} (on {os.cpu_count()} cores)\n\n"
            + table.to_string(index=False, float_format=lambda v: f"{v:.4g}") + "\n")
    dense = table[table.form == "dense"]
    text += f"\nworst CV of the dense median: {dense['cv_of_medians'].max():.2%}\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_stability_{args.hardware}.md").write_text(text)
    all_rows.to_csv(out / f"bench_stability_{args.hardware}.csv", index=False)
    print(text)


if __name__ == "__main__":
    main()
