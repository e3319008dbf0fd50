"""Louizos, Welling & Kingma 2018 ("Learning Sparse Neural Networks through L0 Regularization"),
Table 1: LeNet-300-100 with gates on each layer's input features. Checks: final test error <= 1.8 %
and the network at most 35 % of the dense weights. The fast variant (10 epochs) is far shorter than
the paper's 200 epochs: its numbers are reported without a verdict.
"""

from __future__ import annotations

import pandas as pd

from pruneexp.reproduce import Check, Reproduction, register


def check(table: pd.DataFrame) -> list[Check]:
    last = table[table["level"] == table["level"].max()].iloc[0]
    err = 100 * (1 - last["test_acc_mean"])
    kept = 100 * last["remaining_mean"]
    return [Check("final test error", "1.4 % (claim: <= 1.8 %)", f"{err:.2f} %", "<= 1.8 %", err <= 1.8),
            Check("weights kept", "219-214-100 (claim: <= 35 %)", f"{kept:.1f} %", "<= 35 %", kept <= 35)]


register(Reproduction(
    name="l0_lenet",
    paper="Louizos et al. 2018, L0 hard-concrete gates, Table 1 (LeNet-300-100)",
    setups={"l0": []},
    seeds=(0,),
    check=check,
    fast_verdicts=False,
    fast=["train.duration=10ep", "train.eval_every=1ep"],
    metric="test_acc",
))
