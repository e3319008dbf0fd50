"""Renda, Frankle & Carbin 2020, "Comparing Rewinding and Fine-tuning in Neural Network Pruning".

The paper's ordering at high sparsity, at an equal retraining budget: learning-rate rewinding >=
weight rewinding > fine-tuning. It was shown on CIFAR ResNets (and ImageNet); this reproduction
runs LeNet-300-100 on MNIST, which the paper did not test, so the comparison is reported without a
pass/fail verdict. (CIFAR-10 is not in the shared data here; ResNet-20 is left for a machine that
has it: `pruneexp reproduce renda_rewinding model=resnet20 dataset=cifar10 ...`.)
"""

from __future__ import annotations

import pandas as pd

from pruneexp.reproduce import Check, Reproduction, register

MODES = ("lr_rewind", "rewind", "finetune")


def check(table: pd.DataFrame) -> list[Check]:
    acc = "test_acc_mean"
    last = int(table["level"].max())
    at = {m: table[(table["schedule.retrain"] == m) & (table["level"] == last)].iloc[0] for m in MODES}
    remaining = at["rewind"]["remaining_mean"]
    order = " >= ".join(sorted(MODES, key=lambda m: -at[m][acc]))
    return [Check(f"ordering at {100 * remaining:.1f} % of weights remaining (LeNet-300-100/MNIST, not in the paper)",
                  "lr_rewind >= rewind > finetune (CIFAR ResNets)",
                  f"{order}: " + ", ".join(f"{m} {100 * at[m][acc]:.2f} %" for m in MODES), "-", None)]


register(Reproduction(
    name="renda_rewinding",
    paper="Renda et al. 2020, rewinding vs fine-tuning",
    setups={m: [f"schedule.retrain={m}"] for m in MODES},
    check=check,
    # half the training, the same shape: rewind at 1/6, budget 5/6 of the training, 8 levels (16.8 %)
    fast=["schedule.levels=8", "train.duration=1500it", "schedule.rewind=250it", "schedule.finetune.duration=1250it",
          "train.milestones=[750it,1125it]"],
))
