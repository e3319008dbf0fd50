"""Molchanov, Ashukha & Vetrov 2017 ("Variational Dropout Sparsifies Deep Neural Networks"), Table 1:
LeNet-300-100 on MNIST reaches 1.92 % error with 68x fewer weights (per layer 98.9 / 97.2 / 62.0 %
sparse), with the authors' recipe (conf/experiment/sparse_vd_lenet.yaml). Checks: final test error
within 0.3 points of 1.92 %, compression (prunable weights / weights kept) at least half the
paper's (34x).

The fast variant runs the same recipe 10x shorter (20 epochs: KL weight 0 to epoch 1 and 1 from
epoch 3, the LR flat to epoch 10 then to 0) and checks its own expectation, stated before it was
run: most weights are already gone (compression >= 10x) at a final test error <= 2.5 %.
"""

from __future__ import annotations

import pandas as pd

from pruneexp.reproduce import Check, Reproduction, register


def final(table: pd.DataFrame) -> tuple[float, float]:
    """(final test error %, compression = prunable weights / kept) of the last level."""
    last = table[table["level"] == table["level"].max()].iloc[0]
    return 100 * (1 - last["test_acc_mean"]), 1 / last["remaining_mean"]


def check(table: pd.DataFrame) -> list[Check]:
    err, comp = final(table)
    return [Check("final test error", "1.92 %", f"{err:.2f} %", "within 0.3 points", abs(err - 1.92) <= 0.3),
            Check("compression (prunable weights / kept)", "68x", f"{comp:.1f}x", ">= 34x", comp >= 34)]


def fast_check(table: pd.DataFrame) -> list[Check]:
    err, comp = final(table)
    return [Check("fast (20 epochs): final test error", "1.92 % after 200 epochs", f"{err:.2f} %", "<= 2.5 %", err <= 2.5),
            Check("fast (20 epochs): compression", "68x after 200 epochs", f"{comp:.1f}x", ">= 10x", comp >= 10)]


register(Reproduction(
    name="sparse_vd_lenet",
    paper="Molchanov et al. 2017, sparse variational dropout, Table 1 (LeNet-300-100)",
    setups={"sparse_vd": []},
    seeds=(0,),
    check=check,
    fast_check=fast_check,
    fast=["train.duration=20ep", "regularizer.kl_warmup_start=1ep", "regularizer.kl_warmup=2ep", "train.milestones=[10ep]",
          "train.eval_every=2ep"],
    metric="test_acc",
))
