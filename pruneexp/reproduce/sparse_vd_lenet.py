"""Molchanov, Ashukha & Vetrov 2017 ("Variational Dropout Sparsifies Deep Neural Networks"), Table 1:
LeNet-300-100 on MNIST reaches 1.92 % error with 68x fewer weights. Checks: final test error within
0.3 points of 1.92 %, compression (prunable weights / weights kept) at least half the paper's (34x).
The fast variant (10 epochs, KL warm-up 3 epochs) is far shorter than the paper's 200 epochs: its
numbers are reported without a verdict.
"""

from __future__ import annotations

import pandas as pd

from pruneexp.reproduce import Check, Reproduction, register


def check(table: pd.DataFrame) -> list[Check]:
    last = table[table["level"] == table["level"].max()].iloc[0]
    err = 100 * (1 - last["test_acc_mean"])
    comp = 1 / last["remaining_mean"]
    return [Check("final test error", "1.92 %", f"{err:.2f} %", "within 0.3 points", abs(err - 1.92) <= 0.3),
            Check("compression (prunable weights / kept)", "68x", f"{comp:.1f}x", ">= 34x", comp >= 34)]


FAST = ["train.duration=10ep", "regularizer.kl_warmup=3ep", "train.eval_every=1ep"]

register(Reproduction(
    name="sparse_vd_lenet",
    paper="Molchanov et al. 2017, sparse variational dropout, Table 1 (LeNet-300-100)",
    setups={"sparse_vd": []},
    seeds=(0,),
    check=check,
    fast_verdicts=False,
    fast=FAST,
    metric="test_acc",
))
