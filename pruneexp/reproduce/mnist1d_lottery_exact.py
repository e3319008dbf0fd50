"""Greydanus 2020, "Scaling Down Deep Learning" (MNIST-1D), lottery tickets: the notebook's protocol
exactly (conf/experiment/mnist1d_lottery_exact.yaml lists each of its choices and where the
notebook makes it), and then our earlier recipe's differences switched on one at a time.

The notebook (github.com/greydanus/mnist1d, notebooks/lottery-tickets.ipynb) shows, over 2 trials,
the ticket at ~73 % final test accuracy and the random mask at ~62 % at 87-94 % sparsity, against
~65 % dense. Our `mnist1d_lottery_notebook` recipe (results/reproductions/mnist1d_lottery_notebook_seed0)
gave ticket 69.2 % and random 69.0 %: no gap.

`mnist1d_lottery_exact`: the exact protocol, ticket and random mask, 3 seeds, 95 linear levels (to
96 % sparse; the random mask trains only at the band's levels and the last, its other masks
drawn but not trained). Its fast variant walks the same protocol in 5 linear rounds of
18 points to 90 %, 3 seeds (not in CI: ~20 trainings of 1 501 steps). Claims (final test accuracy, mean over seeds, averaged over the levels at 87-94 %
sparsity, where the notebook reads its numbers):
- the ticket beats the random mask by at least MARGIN (5 points; the notebook's gap is ~11), the
  margin of `mnist1d_lottery`;
- the ticket is at least as accurate as the dense network, within TOLERANCE (1 point);
- reported: the absolute accuracies beside the notebook's.
`mnist1d_lottery_ablation`: seed 0, the exact protocol and each of our earlier recipe's differences
on its own (ABLATIONS), ticket and random mask each; reported without verdict: the gap at 87-94 %.
Its fast variant (the screen that was run) takes the 5-round path of 18 points to 90 %, the
geometric ablation 5 rounds of 36.9 % of the remaining weights to the same 90 %.
"""

from __future__ import annotations

import pandas as pd

from pruneexp.report import View
from pruneexp.reproduce import Check, Reproduction, claim_check, register, retrain

MARGIN = 0.05  # ticket - random mask (notebook: ~0.11), as mnist1d_lottery
TOLERANCE = 0.01  # ticket may fall this far below dense and still count (notebook: ~0.08 above)
BAND = (0.87, 0.94)  # the sparsities the notebook's numbers are read at
EXACT_ROUNDS = ("linear", 1 / 99, 95)  # conf/experiment/mnist1d_lottery_exact.yaml: rounds, rate, levels
FAST_ROUNDS = ("linear", 0.18, 5)  # the screening variant: 5 linear rounds of 18 points, to 90 %
# each of our earlier recipe's differences from the notebook, switched on alone
ABLATIONS = {
    "exact": [],
    "val_holdout": ["dataset.val_size=500"],  # 500 of the 4 000 training examples held out
    "shuffled": ["train.batch_order=shuffle"],  # batches reshuffled every epoch
    "weights_only": ["prune.biases=false"],  # biases never pruned
    "geometric": ["schedule.rounds=geometric"],  # a fraction of the remaining weights per round (rate set below)
    "last_step_mask": ["schedule.mask_step=null"],  # mask from the weights at the last step
    "normalized": ["dataset.normalize=true"],  # inputs standardised by the training split's mean and std
}


def sparsity_at(rounds: str, rate: float, level: int) -> float:
    return level * rate if rounds == "linear" else 1 - (1 - rate) ** level


def random_levels(rounds: str, rate: float, levels: int) -> list[int]:
    """The levels the random-mask control trains (schedule.only_levels; the others' masks are drawn,
    not trained): those in the band, where the claim is read, and the last."""
    band = [k for k in range(1, levels + 1) if BAND[0] - 1e-9 <= sparsity_at(rounds, rate, k) <= BAND[1] + 1e-9]
    return sorted(set(band + [levels]))


def controls(rounds: str, rate: float, levels: int, extra: list[str]) -> dict[str, list[str]]:
    """Ticket and random mask with these rounds: `extra` overrides on top."""
    over = [f"schedule.rounds={rounds}", f"schedule.rate={rate!r}", f"schedule.levels={levels}", *extra]
    only = ",".join(map(str, random_levels(rounds, rate, levels)))
    return {"ticket": [*over, "schedule.retrain=rewind"], "random": [*over, "schedule.retrain=random_mask", f"schedule.only_levels=[{only}]"]}


def ablation_setups(rounds: tuple[str, float, int]) -> dict[str, list[str]]:
    """Every ablation's ticket and random mask; the geometric one reaches the same final sparsity in
    the same number of rounds, removing 1 - (1 - s)^(1/levels) of the remaining weights per round."""
    out = {}
    for name, over in ABLATIONS.items():
        kind, rate, levels = rounds
        if name == "geometric":
            kind, rate = "geometric", 1 - (1 - sparsity_at(*rounds[:2], levels)) ** (1 / levels)
        out.update({f"{name}/{c}": o for c, o in controls(kind, rate, levels, [o for o in over if "rounds" not in o]).items()})
    return out


# the exact protocol's value of each key an ablation changes (conf/experiment/mnist1d_lottery_exact.yaml)
EXACT = {"dataset.val_size": 0, "train.batch_order": "fixed", "prune.biases": True, "schedule.rounds": "linear",
         "schedule.mask_step": "1001it", "dataset.normalize": False}


def ablation_label(row: pd.Series) -> str:
    """What a setup changes from the exact protocol ("exact" when nothing)."""
    def shown(v) -> str:
        return "null" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)

    changed = [f"{k.split('.')[-1]}={shown(row[k])}" for k in EXACT if k in row and shown(row[k]) != str(EXACT[k])]
    return ", ".join(changed) or "exact"


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def band_rows(rows: pd.DataFrame) -> pd.DataFrame:
    sparsity = 1 - rows["remaining_mean"]
    return rows[(sparsity >= BAND[0] - 1e-9) & (sparsity <= BAND[1] + 1e-9)]


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per setup: its ablation label, control, dense accuracy, the mean final test accuracy over the
    band's levels, the band's sparsities, the last level's sparsity and accuracy, the seed count."""
    acc = "test_acc_mean"
    out = []
    for _, rows in table.groupby("setup", sort=False):
        rows = rows.sort_values("level")
        band = band_rows(rows)
        first = rows.iloc[0]
        out.append(dict(label=ablation_label(first), retrain=first["schedule.retrain"] if "schedule.retrain" in rows else "rewind",
                        dense=float(rows[rows["level"] == 0][acc].iloc[0]), band=float(band[acc].mean()) if len(band) else float("nan"),
                        band_levels=len(band), band_from=float(1 - band["remaining_mean"].max()) if len(band) else float("nan"),
                        band_to=float(1 - band["remaining_mean"].min()) if len(band) else float("nan"),
                        last_sparsity=float(1 - rows["remaining_mean"].iloc[-1]), last=float(rows[acc].iloc[-1]),
                        seeds=int(rows["seeds"].min())))
    return pd.DataFrame(out)


def pairs(table: pd.DataFrame) -> list[tuple[str, pd.Series, pd.Series]]:
    """(ablation label, ticket row, random row) of `summary`, the exact protocol first."""
    s = summary(table)
    out = []
    for label, rows in s.groupby("label", sort=False):
        t, r = rows[rows["retrain"] == "rewind"], rows[rows["retrain"] == "random_mask"]
        if len(t) and len(r):
            out.append((label, t.iloc[0], r.iloc[0]))
    return sorted(out, key=lambda p: p[0] != "exact")


def check(table: pd.DataFrame) -> list[Check]:
    found = pairs(table)
    if not found:
        return [Check("ticket and random-mask runs on disk", "-", "missing", "-", False)]
    label, t, r = found[0]
    if label != "exact":
        return [Check("the exact protocol's runs on disk", "-", f"found only {', '.join(p[0] for p in found)}", "-", False)]
    if t["band_levels"] == 0 or r["band_levels"] == 0:
        return [Check(f"levels at {100 * BAND[0]:.0f}-{100 * BAND[1]:.0f} % sparsity", "-",
                      f"the runs reach {pct(t['last_sparsity'])} (ticket) and {pct(r['last_sparsity'])} (random)", "-", False)]
    where = f"{pct(t['band_from'])}-{pct(t['band_to'])} sparse ({int(t['band_levels'])} levels, seeds: {int(t['seeds'])}, {int(r['seeds'])})"
    gap = t["band"] - r["band"]
    ok_gap = bool(gap >= MARGIN)
    ok_dense = bool(t["band"] >= t["dense"] - TOLERANCE)
    return [
        claim_check(f"exact protocol: ticket beats random mask at {where}", "~73 % vs ~62 % (gap ~11 points)",
                    f"{pct(t['band'])} vs {pct(r['band'])} (gap {100 * gap:+.1f} points)", f"ticket - random >= {100 * MARGIN:.0f} points",
                    ok_gap),
        claim_check(f"exact protocol: ticket at {where} keeps the dense accuracy", "~73 % vs dense ~65 %",
                    f"{pct(t['band'])} vs dense {pct(t['dense'])}", f"ticket >= dense - {100 * TOLERANCE:.0f} point", ok_dense),
        Check("absolute accuracies at 87-94 % (ticket / random / dense); last level", "73 / 62 / 65 %",
              f"{pct(t['band'])} / {pct(r['band'])} / {pct(t['dense'])}; at {pct(t['last_sparsity'])}: ticket {pct(t['last'])}, "
              f"random {pct(r['last'])}", "-", None),
    ]


def check_ablation(table: pd.DataFrame) -> list[Check]:
    out = []
    for label, t, r in pairs(table):
        out.append(Check(f"{label}: ticket - random at {pct(t['band_from'])}-{pct(t['band_to'])} sparse ({int(t['band_levels'])} levels)",
                         "notebook: ~+11 points",
                         f"{100 * (t['band'] - r['band']):+.1f} points (ticket {pct(t['band'])}, random {pct(r['band'])}, dense "
                         f"{pct(t['dense'])}; seeds: {int(t['seeds'])})", "-", None))
    return out


register(Reproduction(
    name="mnist1d_lottery_exact",
    paper="Greydanus 2020, MNIST-1D lottery tickets, the notebook's protocol exactly",
    setups=controls(*EXACT_ROUNDS, []),
    check=check,
    # Not in CI: the notebook's claim sits at 87-94 % sparsity, 88+ linear rounds of 1 501 steps for the ticket
    # (about half an hour a seed on one core). The fast variant (5 linear rounds of 18 points, to 90 %, one
    # seed) checks the same claims on that shorter path.
    fast_setups=controls(*FAST_ROUNDS, []),
    fast_seeds=(0, 1, 2),
    view=View(curve=retrain, order=("ticket", "random mask")),
))

register(Reproduction(
    name="mnist1d_lottery_ablation",
    paper="Greydanus 2020, MNIST-1D lottery tickets: our earlier recipe's differences one at a time",
    setups=ablation_setups(EXACT_ROUNDS),
    seeds=(0,),
    check=check_ablation,
    fast_setups=ablation_setups(FAST_ROUNDS),
    view=View(panel=ablation_label, curve=retrain, order=("exact", "ticket", "random mask")),
))
