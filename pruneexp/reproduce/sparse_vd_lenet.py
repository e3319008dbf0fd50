"""Molchanov, Ashukha & Vetrov 2017 ("Variational Dropout Sparsifies Deep Neural Networks"), Table 1:
LeNet-300-100 on MNIST reaches 1.92 % error with 68x fewer weights (per layer 98.9 / 97.2 / 62.0 %
sparse), and LeNet-5-Caffe 0.75 % error at 280x, with the authors' recipes
(conf/experiment/sparse_vd_lenet.yaml; svdo-lasagne/experiments/lenet/lenet300-100-ard.py and
lenet5-ard.py). Checks, per network: final test error within 0.3 points of the paper's,
compression (prunable weights / weights kept) at least half the paper's (34x, 140x).

Setups of the full variant: `sparse_vd` (LeNet-300-100, the experiment as it stands) and
`lenet5_caffe` (model=lenet5_caffe, its convolutions wrapped too: mean conv(x, θ), variance
conv(x², α θ²); the LR linear to 0 from epoch 0, the reference's `lr_linear_to0` for LeNet-5;
everything else as for LeNet-300-100). The reference's LeNet-5 has a ReLU after each convolution;
our lenet5_caffe follows Caffe's prototxt, which has none (see pruneexp/models/lenet.py). The
reference may start LeNet-5 from pretrained weights (its optional `iparam`); here both start from
N(0, 0.01²).

The first fast variant ran the same recipe 10x shorter (20 epochs: KL weight 0 to epoch 1 and 1
from epoch 3, the LR flat to epoch 10 then to 0) against its expectation (compression >= 10x at a
final error <= 2.5 %): PASS (2.05 % at 96.2x), but at 6.2 CPU-minutes, too slow for CI.

The fast variant now (CI) runs the recipe 33x shorter, every phase scaled by 6/200: 6 epochs of
550 steps, the KL weight 0 for 82 steps (5 of 200 epochs) then linear to 1 over 247 steps (15 of
200), the LR flat to epoch 3 then linearly to 0 at 6; the same network, init, clip, threshold,
train_clip, batch and optimizer. Its expectation, stated before it was run:

- compression >= 10x (90 % of the weights gone): the KL pulls log α up from step 82; for a weight
  the data does not hold, its gradient -2/θ · ∂KL/∂log α shrinks θ, and Adam's steps (~1e-3 a
  step against |θ| ~ 0.01 at init) take log α past the threshold 3 within hundreds of steps, so
  the ~2 700 steps at full KL weight suffice for most of the 235 200 first-layer weights (the
  paper's 98.9 % sparse layer);
- final test error <= 3.0 %: a LeNet-300-100 trained with Adam 1e-3 is near 2 % after a few
  epochs; the multiplicative noise and a run 33x shorter than the paper's (1.92 %) leave it a
  point of room.

Its run (seed 0): 3.89 % error (FAIL) at 80.0x (PASS), 1.6 CPU-minutes under a load of ~5. The
error expectation was wrong: 6 epochs do not bring the noisy network back near 2 %. It stays out
of CI (and no shorter recipe would fit CI's CPU budget and expect a useful error).
"""

from __future__ import annotations

import pandas as pd

from pruneexp.reproduce import Check, Reproduction, register


def final(table: pd.DataFrame) -> tuple[float, float]:
    """(final test error %, compression = prunable weights / kept) of the last level."""
    last = table[table["level"] == table["level"].max()].iloc[0]
    return 100 * (1 - last["test_acc_mean"]), 1 / last["remaining_mean"]


PAPER = {"lenet_300_100": (1.92, 68.0), "lenet5_caffe": (0.75, 280.0)}  # network -> (error %, compression)


def check(table: pd.DataFrame) -> list[Check]:
    """The paper's two numbers for each network on disk (the table's `model.name` column when both
    networks are there; LeNet-300-100, the experiment's own, when only one setup is)."""
    if "model.name" not in table.columns:
        table = table.assign(**{"model.name": "lenet_300_100"})
    checks = []
    for net, rows in table.groupby("model.name", sort=False):
        (paper_err, paper_comp), (err, comp) = PAPER[net], final(rows)
        checks += [Check(f"{net}: final test error", f"{paper_err:.2f} %", f"{err:.2f} %", "within 0.3 points",
                         abs(err - paper_err) <= 0.3),
                   Check(f"{net}: compression (prunable weights / kept)", f"{paper_comp:.0f}x", f"{comp:.1f}x",
                         f">= {paper_comp / 2:.0f}x", comp >= paper_comp / 2)]
    return checks


def fast_check(table: pd.DataFrame) -> list[Check]:
    err, comp = final(table)
    return [Check("fast (6 epochs): final test error", "1.92 % after 200 epochs", f"{err:.2f} %", "<= 3.0 %", err <= 3.0),
            Check("fast (6 epochs): compression", "68x after 200 epochs", f"{comp:.1f}x", ">= 10x", comp >= 10)]


register(Reproduction(
    name="sparse_vd_lenet",
    paper="Molchanov et al. 2017, sparse variational dropout, Table 1 (LeNet-300-100, LeNet-5-Caffe)",
    setups={"sparse_vd": [], "lenet5_caffe": ["model=lenet5_caffe", "train.milestones=[]"]},
    fast_setups={"sparse_vd": []},
    seeds=(0,),
    check=check,
    fast_check=fast_check,
    # every phase of the 200-epoch recipe scaled by 6/200 (550 steps an epoch)
    fast=["train.duration=6ep", "regularizer.kl_warmup_start=82it", "regularizer.kl_warmup=247it", "train.milestones=[3ep]",
          "train.eval_every=1ep"],
    metric="test_acc",
    # Not in CI: the 6-epoch variant FAILed its stated error expectation (3.89 % against <= 3.0 %, at 80x) and
    # took 1.6 CPU-minutes under load (results/reproductions/README.md); no shorter faithful recipe fits CI.
    ci=False,
))
