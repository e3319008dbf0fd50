"""The criteria table of issue #3: every criterion x {weight, channel} that applies, LeNet-300-100 on
MNIST, one-shot to 90 % (weight) / 50 % (channel), test accuracy before fine-tuning ("pruned") and
after a short fine-tune ("finetuned"), 2 seeds.

    PRUNEEXP_DATA=/work/shared/data python scripts/criteria_table.py          # run, then tabulate
    python scripts/criteria_table.py --tabulate                                # tabulate what ran

Running it executes ONE multirun (printed, and in README.md); pairs a criterion cannot score are
skipped (skip_unsupported=true). `bn_scale` is left out: LeNet-300-100 has no BatchNorm. Dense
training is shared per seed (results/pretrained/), so it first trains the two dense networks in
parallel, which the multirun then reuses. Writes results/benchmarks/criteria_table.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pruneexp.pruning.criteria import CRITERIA  # noqa: E402

CRITERIA_IN_TABLE = [c for c in CRITERIA if c != "bn_scale"]
SWEEP = ["experiment=criteria_weight,criteria_channel", f"criterion={','.join(CRITERIA_IN_TABLE)}", "seed=0,1",
         "skip_unsupported=true", "quiet=true", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def pruneexp(*args: str) -> None:
    cmd = [sys.executable, "-m", "pruneexp", "run", "-m", *args]
    print("$ pruneexp run -m " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def tabulate(results: Path) -> str:
    """Markdown table from every finished run under results/criteria_table/."""
    rows = []
    for run in sorted((results / "criteria_table").glob("*/levels.csv")):
        cfg = yaml.safe_load((run.parent / "config.yaml").read_text())
        levels = pd.read_csv(run).set_index("name")
        for level in ("pruned", "finetuned"):
            if level in levels.index:
                rows.append(dict(criterion=cfg["criterion"]["name"], granularity=cfg["prune"]["granularity"],
                                 seed=cfg["seed"], level=level, test_acc=levels.loc[level, "test_acc"] * 100,
                                 sparsity=levels.loc[level, "sparsity"] * 100))
    if not rows:
        return "(no finished runs)\n"
    df = pd.DataFrame(rows)
    dense = []
    for run in sorted((results / "criteria_table").glob("*/levels.csv")):
        levels = pd.read_csv(run).set_index("name")
        dense.append(levels.loc["dense", "test_acc"] * 100)
    out = ["| criterion | granularity | weight sparsity % | pruned test acc % | fine-tuned test acc % | seeds |",
           "|---|---|---|---|---|---|"]
    order = {c: i for i, c in enumerate(CRITERIA_IN_TABLE)}
    for (gran, crit), g in sorted(df.groupby(["granularity", "criterion"]), key=lambda kv: (kv[0][0] != "weight", order.get(kv[0][1], 99))):
        cell = {}
        for level in ("pruned", "finetuned"):
            acc = g[g.level == level].test_acc
            cell[level] = f"{acc.mean():.2f} ± {acc.std(ddof=0):.2f}" if len(acc) else "—"
        out.append(f"| {crit} | {gran} | {g.sparsity.mean():.1f} | {cell['pruned']} | {cell['finetuned']} | {g.seed.nunique()} |")
    out.append("")
    out.append(f"Dense LeNet-300-100 test accuracy: {pd.Series(dense).mean():.2f} % (mean over runs; 4 epochs). "
               "Test accuracy, mean ± sd over seeds. Channel rows prune 50 % of the units of every hidden layer "
               "(layerwise; the classifier keeps its outputs), so their weight sparsity is lower.")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tabulate", action="store_true", help="only tabulate the runs already finished")
    parser.add_argument("--results", default=os.environ.get("PRUNEEXP_RESULTS", str(ROOT / "results")))
    args = parser.parse_args()
    results = Path(args.results)
    if not args.tabulate:
        # the two dense networks, in parallel; the sweep below reuses them (results/pretrained/)
        pruneexp("experiment=criteria_weight", "criterion=magnitude", "seed=0,1", "quiet=true",
                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
        pruneexp(*SWEEP)
    table = tabulate(results)
    out = results / "benchmarks" / "criteria_table.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Criteria on LeNet-300-100 / MNIST, one-shot\n\n" + table)
    print(table)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
