"""Han, Pool, Tran & Dally 2015, "Learning both Weights and Connections for Efficient Neural
Networks", Table 1: LeNet-300-100 and LeNet-5 (Caffe's, model=lenet5_caffe) on MNIST pruned to
about 8 % of their weights at the paper's per-layer densities, by iterative magnitude pruning with
retraining of the surviving weights at a tenth of the learning rate (no rewinding). Recipe in
conf/experiment/han2015.yaml.

Claims checked (test accuracy at the end of each training, one number per seed, mean over seeds):
- the pruned network's error is within 0.2 points of our dense network's (Table 1: 1.64 -> 1.59 %
  and 0.80 -> 0.77 %: no loss): PASS when pruned error <= dense error + 0.2 points, "not
  reproduced" with the numbers when not;
- every layer ends at the paper's density within 0.5 points (a check of the code: FAIL if not),
  read from the last level of each run's layers.csv;
- reported without verdict: the paper's dense and pruned errors beside ours, and the weights
  remaining overall (the paper's 8 %).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from pruneexp.report import PaperPoint, View, pretty
from pruneexp.reproduce import Check, Reproduction, claim_check, pct, plot_panels, register
from pruneexp.results.store import RunStore

# Table 1's weights remaining per layer (density), by our parameter names
DENSITY = {
    "lenet_300_100": {"layers.1.weight": 0.08, "layers.3.weight": 0.09, "layers.5.weight": 0.26},
    "lenet5_caffe": {"features.0.weight": 0.66, "features.2.weight": 0.12, "classifier.0.weight": 0.08, "classifier.2.weight": 0.19},
}
PAPER = {"lenet_300_100": (0.0164, 0.0159), "lenet5_caffe": (0.0080, 0.0077)}  # (dense, pruned) error
WITHIN = 0.002  # 0.2 error points
DENSITY_WITHIN = 0.005  # 0.5 points of density per layer


def layer_sparsity(net: str) -> str:
    return "+prune.layer_sparsity={" + ",".join(f"{n}:{round(1 - d, 4)}" for n, d in DENSITY[net].items()) + "}"


def base(net: str) -> list[str]:
    return ([] if net == "lenet_300_100" else [f"model={net}"]) + [layer_sparsity(net)]


# Retraining steps per round (full variant): 5 000 for LeNet-300-100; 2 000 for LeNet-5-Caffe, whose
# step costs ~15 LeNet-300-100 steps on a CPU (10k dense + 5 x 2k retraining is ~25 min there)
RETRAIN = {"lenet_300_100": 5_000, "lenet5_caffe": 2_000}
SETUPS = {net: [*base(net), f"schedule.finetune.duration={RETRAIN[net]}it"] for net in DENSITY}


def by_net(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The levels of each network, in order."""
    nets = table["model.name"] if "model.name" in table else pd.Series("lenet_300_100", index=table.index)
    return {net: table[nets == net].sort_values("level") for net in dict.fromkeys(nets)}


def check(table: pd.DataFrame) -> list[Check]:
    checks = []
    for net, rows in by_net(table).items():
        dense, last = rows[rows["level"] == 0], rows[rows["level"] == rows["level"].max()]
        if len(dense) == 0 or int(last["level"].iloc[0]) == 0:
            continue
        d, p = 1 - float(dense["test_acc_mean"].iloc[0]), 1 - float(last["test_acc_mean"].iloc[0])
        seeds = f"{int(last['seeds'].iloc[0])} seed(s), level {int(last['level'].iloc[0])}"
        checks.append(claim_check(f"{net}: error after iterative pruning within 0.2 points of the dense error",
                                  f"{pct(PAPER[net][0])} -> {pct(PAPER[net][1])} (Han et al. 2015, Table 1)",
                                  f"dense {pct(d)} -> pruned {pct(p)} ({seeds})", "pruned <= dense + 0.2 points", p <= d + WITHIN))
        checks.append(Check(f"{net}: weights remaining overall", "8 % (12x compression)",
                            f"{pct(float(last['remaining_mean'].iloc[0]))}", "-", None))
    return checks


def plot(table: pd.DataFrame, out: Path) -> None:
    """error_vs_remaining.png: test error after each prune/retrain round against weights remaining,
    one panel per network, with Table 1's dense and pruned errors as stars."""
    panels = {}
    for net, rows in by_net(table).items():
        std = rows["test_acc_std"].fillna(0) if "test_acc_std" in rows else [0] * len(rows)
        panels[net] = [("ours (dense, then each round)", list(100 * rows["remaining_mean"]), list(100 * (1 - rows["test_acc_mean"])),
                        list(100 * std), "o-"),
                       ("paper (Table 1)", [100.0, 8.0], [100 * e for e in PAPER[net]], [], "k*")]
    plot_panels(out, "error_vs_remaining.png", panels, "weights remaining (%, log)", "test error (%)", log_x=True)


def check_runs(runs: list[Path]) -> list[Check]:
    """Each layer's density at the last level of each run against Table 1's."""
    checks = []
    for run in runs:
        cfg = OmegaConf.load(run / "config.yaml")
        layers = pd.DataFrame(RunStore(run).read_csv("layers.csv"))
        if not len(layers) or int(layers["level"].max()) == 0:
            continue
        last = layers[layers["level"] == layers["level"].max()]
        got = {r["layer"]: r["nonzero"] / r["numel"] for _, r in last.iterrows()}
        want = DENSITY[cfg.model.name]
        off = {n: got.get(n, float("nan")) for n, d in want.items() if not abs(got.get(n, float("nan")) - d) <= DENSITY_WITHIN}
        checks.append(Check(f"{cfg.model.name} seed {cfg.seed}: per-layer density at level {int(last['level'].iloc[0])}",
                            ", ".join(f"{n} {100 * d:.0f} %" for n, d in want.items()),
                            ", ".join(f"{n} {100 * g:.2f} %" for n, g in got.items()), "each within 0.5 points", passed=not off))
    return checks


register(Reproduction(
    name="han2015",
    paper="Han et al. 2015, iterative pruning of LeNet-300-100 and LeNet-5 (Caffe) to ~8 % of the weights",
    setups=SETUPS,
    check=check,
    check_runs=check_runs,
    plot=plot,
    ci=True,
    # 3 prune/retrain rounds to the same per-layer densities; LeNet-300-100: 3 000 dense + 3 x 1 000
    # retraining steps, LeNet-5-Caffe: 1 000 + 3 x 300 (its steps cost ~15x more on a CPU); one seed
    fast_setups={"lenet_300_100": [*base("lenet_300_100"), "train.duration=3000it", "schedule.finetune.duration=1000it"],
                 "lenet5_caffe": [*base("lenet5_caffe"), "train.duration=1000it", "schedule.finetune.duration=300it"]},
    fast=["schedule.levels=3", "train.eval_every=1000it"],
    view=View(curve=lambda row: "iterative pruning", order=("LeNet-300-100", "LeNet-5-Caffe")),  # one method; a panel per network
    # Table 1: dense and pruned error, the pruned network at 8 % of the weights (12x)
    paper_points=tuple(PaperPoint(pretty(net), "iterative pruning", remaining, 1 - err, f"Table 1, {what}")
                       for net, (dense, pruned) in PAPER.items()
                       for remaining, err, what in ((1.0, dense, "dense"), (0.08, pruned, "pruned to 8 %"))),
))
