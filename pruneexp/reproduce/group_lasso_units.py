"""Group lasso on units (Scardapane, Comminiello, Hussain & Uncini 2017, "Group sparse
regularization for deep neural networks"): on LeNet-300-100 / MNIST the group penalty over each
hidden unit's weights removes at least half of the 400 hidden units while losing at most 0.5
points of test accuracy against the same training without the penalty, and the network physically
shrunk to its surviving units (torch-pruning, `shrunk` latency form, checked to give the masked
model's outputs) runs faster than the dense one.

Setups: `group_lasso` (experiment group_lasso_units: proximal group lasso, λ = 1e-3, 20 epochs,
units thresholded at ‖w_g‖ <= 1e-3, 2 epochs of fine-tuning) and `none` (the same schedule and
budget, no regularizer: the reference accuracy). The numbers are the final test accuracy of the
last level (after fine-tuning), not the best seen during training.
Fast variant: 2 training epochs, λ = 2e-3, one seed; the same claims and tolerances. (λ was doubled
for the short recipe after one attempt with the full variant's λ = 1e-3 at 2 epochs removed 40.8 %
of the units, a FAIL of the first claim; at λ = 2e-3 with 1 fine-tuning epoch the accuracy claim
held with little margin: 0.45 of 0.5 points, too little for CI.)
Fast variant now (CI): the same, with the full variant's 2 fine-tuning epochs rather than 1, for
both setups. Stated before its run: the training phase is unchanged (same seed, same steps), so
the same 296 units (74 %) are removed; the extra epoch lets the pruned network recover more than
the reference gains (the reference is already trained, the pruned one has just lost 74 % of its
hidden units), so the accuracy claim is expected to hold by more than the 0.05 points of before.
Its run (seed 0): 289 units removed (72.2 %), 0.14 points lost (97.75 % vs 97.89 %), the shrunk
network 2.05x / 1.12x faster at batch 1 / 256 (timed under a load of ~6): PASS, PASS, PASS. Not the
same 296 units as before, as was stated: the earlier run used the foreach optimizer, the default
then; the fused one (the default since) rounds differently. Run again with one thread
(`hardware.threads=1`, now part of the fast variant): the same numbers to the last digit, the
shrunk network 2.20x / 2.47x faster, 43 s wall and 29 s CPU against 2 min 45 s and 107 s with
two threads on the loaded machine.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from pruneexp.report import View
from pruneexp.reproduce import Check, Reproduction, claim_check, register

HIDDEN = 400  # LeNet-300-100's hidden units (the classifier's 10 are never removed)


def _last(run: Path) -> dict:
    levels = pd.read_csv(run / "levels.csv")
    return levels.iloc[-1].to_dict()


def check_runs(runs: list[Path]) -> list[Check]:
    by_setup: dict[str, list[Path]] = {}
    for run in runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        by_setup.setdefault(cfg["regularizer"]["name"], []).append(run)
    if "group_lasso" not in by_setup or "none" not in by_setup:
        return [Check("both setups on disk", "-", f"found {sorted(by_setup)}", "-", False)]
    gl = [_last(r) for r in by_setup["group_lasso"]]
    ref = [_last(r) for r in by_setup["none"]]
    removed = sum(HIDDEN - r["units_alive"] for r in gl) / len(gl) / HIDDEN
    acc_gl = sum(r["test_acc"] for r in gl) / len(gl)
    acc_ref = sum(r["test_acc"] for r in ref) / len(ref)
    loss = 100 * (acc_ref - acc_gl)
    checks = [
        claim_check("hidden units removed by the penalty (of 400)", ">= 50 %", f"{100 * removed:.1f} % "
                    f"({', '.join(str(int(HIDDEN - r['units_alive'])) for r in gl)} units)", ">= 50 %", removed >= 0.5),
        claim_check("test accuracy loss vs no regularizer (final, after fine-tuning)", "<= 0.5 points",
                    f"{loss:.2f} points ({100 * acc_gl:.2f} % vs {100 * acc_ref:.2f} %; "
                    f"{100 * (1 - sum(r['sparsity'] for r in gl) / len(gl)):.1f} % of the masks' entries kept)", "<= 0.5 points",
                    loss <= 0.5),
    ]
    lat = pd.concat([pd.read_csv(r / "latency.csv") for r in by_setup["group_lasso"] if (r / "latency.csv").exists()])
    shrunk = lat[(lat["form"] == "shrunk")]
    if shrunk.empty:
        checks.append(Check("shrunk network faster than dense", "smaller and faster", "no shrunk timing on disk", "> 1x", False))
        return checks
    ok = bool((shrunk["status"] == "ok").all())
    speed = shrunk.groupby("batch_size")["speedup_vs_dense"].median()
    big = int(speed.index.max())
    # the parameters each form holds: the shrunk network's count is the true size (a removed unit's row is masked,
    # but the next layer's column that reads it is only dropped by the shrink)
    dense_params = float(lat.loc[lat["form"] == "dense", "params"].median())
    shrunk_params = float(shrunk["params"].mean())
    smaller = shrunk_params < dense_params
    checks.append(Check("shrink: a physically smaller network (same outputs) and its measured speedup",
                        "smaller and faster",
                        ", ".join(f"{speed[b]:.2f}x at batch {b}" for b in speed.index) + ("" if ok else " (a form failed)")
                        + f"; {shrunk_params:,.0f} of {dense_params:,.0f} parameters ({100 * shrunk_params / dense_params:.1f} %)",
                        f"fewer parameters, > 1x at batch {big}, outputs equal", ok and smaller and speed[big] > 1.0))
    return checks


register(Reproduction(
    name="group_lasso_units",
    paper="Scardapane et al. 2017, group sparse regularization (units of LeNet-300-100)",
    setups={"group_lasso": [], "none": ["regularizer=none"]},
    check_runs=check_runs,
    # fine-tuning: the experiment's 2 epochs. One thread: CI's budget is one thread's CPU time, and two threads on a
    # busy 2-core machine wait on each other (the same runs: 107 CPU-s and 2.7 min wall with 2, 29 CPU-s and 0.7 min with 1)
    fast=["train.duration=2ep", "regularizer.strength=2e-3", "hardware.threads=1"],
    ci=True,
    # no paper number to mark: the claims are ratios (units removed, accuracy lost), checked from the runs
    view=View(curve=lambda row: {"group_lasso": "group lasso", "none": "no regularizer"}.get(
        str(row.get("regularizer.name")), str(row.get("regularizer.name")))),
))
