"""Louizos, Welling & Kingma 2018 ("Learning Sparse Neural Networks through L0 Regularization"),
Table 1: LeNet-300-100 with gates on each layer's input features reaches 1.4 % error as 219-214-100
(Evci et al. 2020, App. B, quote 266-88-33 at 1.6 %), with the authors' recipe
(conf/experiment/l0_lenet.yaml). Checks: final test error <= 1.8 % and the network at most 35 % of
the dense weights.

The fast variant runs the same recipe for 20 of the 200 epochs and checks its own expectation,
stated before it was run: the gates have already closed half of the weights (<= 50 % kept) at a
final test error <= 2.5 %.
"""

from __future__ import annotations

import pandas as pd

from pruneexp.reproduce import Check, Reproduction, register
from pruneexp.reproduce.sparse_vd_lenet import final


def check(table: pd.DataFrame) -> list[Check]:
    err, comp = final(table)
    return [Check("final test error", "1.4 % (claim: <= 1.8 %)", f"{err:.2f} %", "<= 1.8 %", err <= 1.8),
            Check("weights kept", "219-214-100 (claim: <= 35 %)", f"{100 / comp:.1f} %", "<= 35 %", 100 / comp <= 35)]


def fast_check(table: pd.DataFrame) -> list[Check]:
    err, comp = final(table)
    return [Check("fast (20 epochs): final test error", "1.4 % after 200 epochs", f"{err:.2f} %", "<= 2.5 %", err <= 2.5),
            Check("fast (20 epochs): weights kept", "26 % (219-214-100) after 200", f"{100 / comp:.1f} %", "<= 50 %",
                  100 / comp <= 50)]


register(Reproduction(
    name="l0_lenet",
    paper="Louizos et al. 2018, L0 hard-concrete gates, Table 1 (LeNet-300-100)",
    setups={"l0": []},
    seeds=(0,),
    check=check,
    fast_check=fast_check,
    fast=["train.duration=20ep", "train.eval_every=2ep"],
    metric="test_acc",
))
