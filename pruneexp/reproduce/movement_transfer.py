"""Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptive Sparsity by Fine-Tuning", in a setting we can run.

The paper prunes a pretrained BERT while fine-tuning it on a downstream task and finds movement
pruning (scores S learned through a straight-through estimator, ∂L/∂S = ∂L/∂W' · W, hard top-k of S
per layer) better than magnitude pruning at high sparsity (Fig. 2: from about 10 % of the weights
remaining down to 3 %), where the pretrained magnitudes say little about the new task. Here: LeNet-300-100
trained on MNIST (seed 0, the "pretrained" network, `prepare` below), fine-tuned on Fashion-MNIST while
pruned to 90, 95 and 97 % (of the two hidden layers; the classifier is not pruned, as in the
reference code), movement (`schedule=movement`, hard) against gradual magnitude pruning
(`schedule=gmp`, layerwise magnitude) with the same cubic schedule, steps and recipe (see
conf/experiment/movement_transfer.yaml): T steps, LR warm-up W = T/10, sparsity 0 until W, cubic to
the target at T - 2W, held there; scores at lr 1e-2, no weight decay. No small-model result is
published: the numbers are ours.

Differences from the reference code, kept as they are: magnitude masks are re-selected every
T/70 steps (the reference recomputes them every step and lets a pruned weight come back; gmp's
pruned weights stay pruned), and no gradient-norm clipping (the reference clips at 1.0).

Claims checked on the final test accuracy (not the best seen during training), mean over seeds:
- movement >= magnitude at 95 % and at 97 % (the paper's high end; as it comes out, no margin): PASS
  when it holds, "not reproduced" with the numbers when it does not;
- reported without verdict: the same at 90 %, and each run's final error and live architecture
  (in-h1-h2-out, counted the way `shrink` removes units);
- checks of the code (FAIL if not): every run ends at its target sparsity, and both methods train
  for the same number of steps.

The fast variant (CI): T = 1 000 steps (source 1 000 steps on MNIST), 95 and 97 %, seed 0. Its
expectation, stated before it was first run: the code checks PASS; fine-tuning works (every run's
final Fashion-MNIST error is below the transferred network's error before fine-tuning, level 0);
and the paper's claim checked as in the full variant (PASS or "not reproduced", never a FAIL): we
expect movement >= magnitude at 97 % and hold no expectation at 95 %.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pruneexp.report import View
from pruneexp.reproduce import Check, Reproduction, claim_check, final_rows, pct, register

STEPS, FAST_STEPS = 5_500, 1_000  # 10 epochs of 550 batches of 100 (55 000 training examples)
SPARSITIES, FAST_SPARSITIES = (0.95, 0.97, 0.9), (0.95, 0.97)  # the checked ones first: a partial run holds them
HIGH_END = (0.95, 0.97)
UPDATES = 70  # gmp's mask updates between the warm-ups
METHODS = {"movement": "movement", "gmp": "magnitude"}  # schedule.name -> method


def recipe(steps: int) -> list[str]:
    """Length, LR warm-up (W = T/10) and evaluation of a run of `steps` steps."""
    w = steps // 10
    return [f"train.duration={steps}it", f"train.warmup={w}it", f"train.eval_every={w}it"]


def method_overrides(method: str, steps: int) -> list[str]:
    """Sanh's schedule: sparsity 0 for W steps (initial_warmup 1), cubic to the target at T - 2W
    (final_warmup 2), held there to the end."""
    w = steps // 10
    start, end = w, steps - 2 * w
    if method == "movement":
        return ["schedule=movement", "schedule.variant=hard", f"schedule.start={start}it", f"schedule.end={end}it",
                "schedule.score_lr=0.01", "schedule.score_weight_decay=0.0", *recipe(steps)]
    return ["schedule=gmp", "criterion=magnitude", f"schedule.start={start}it", f"schedule.end={end}it",
            f"schedule.frequency={max(1, (end - start) // UPDATES)}it", *recipe(steps)]


def setups(steps: int, sparsities: tuple[float, ...]) -> dict[str, list[str]]:
    return {f"{METHODS[m]}/{round(100 * s)}": [f"sparsity={s}", *method_overrides(m, steps)] for s in sparsities for m in METHODS}


def source_overrides(steps: int) -> list[str]:
    """The network every setup starts from: LeNet-300-100 trained densely on MNIST with the same
    recipe (schedule=oneshot at sparsity 0 without fine-tuning: level 0 is the trained network)."""
    return ["dataset=mnist", "schedule=oneshot", "sparsity=0.0", "schedule.finetune.duration=0it", *recipe(steps)]


def prepare(fast: bool, extra: list[str], compute: bool) -> tuple[list[str], str]:
    """Train (or find) the MNIST network, seed 0; every setup loads its weights (model.weights)."""
    from rich.console import Console

    from pruneexp.reproduce import compose, coverage_line
    from pruneexp.results import RunStore
    from pruneexp.runner import run, run_directory

    overrides = ["experiment=movement_transfer", *source_overrides(FAST_STEPS if fast else STEPS), "seed=0", "quiet=true", *extra]
    cfg = compose(overrides)
    directory = run(cfg, console=Console(quiet=True)).directory if compute else run_directory(cfg)
    weights = directory / "levels" / "level_000.pt"
    rows = RunStore(directory).read_csv("levels.csv")
    acc = f"; MNIST test acc {pct(float(rows[0]['test_acc']))}" if rows else ""
    return [f"model.weights={weights}"], coverage_line("source (LeNet-300-100 on MNIST), seed 0", directory, 1) + acc


def finals(table: pd.DataFrame) -> pd.DataFrame:
    """The trained level of every setup that has one, labelled by method and target sparsity."""
    last = final_rows(table, ("trained",))
    last["method"] = [METHODS.get(str(n), str(n)) for n in last["schedule.name"]]
    # `sparsity` is a setup column where the setups differ in it; otherwise the level's own
    last["target"] = (last["sparsity"] if "sparsity" in last else 1 - last["remaining_mean"]).astype(float).round(2)
    return last


def check(table: pd.DataFrame) -> list[Check]:
    last = finals(table)
    at = {(r["method"], r["target"]): r for _, r in last.iterrows()}
    checks = []
    for s in sorted({t for _, t in at}, key=lambda t: (t not in HIGH_END, t)):
        mv, mg = at.get(("movement", s)), at.get(("magnitude", s))
        if mv is None or mg is None:
            continue
        a, b = float(mv["test_acc_mean"]), float(mg["test_acc_mean"])
        ours = (f"movement {pct(a)}, magnitude {pct(b)} (error {pct(1 - a)} vs {pct(1 - b)}; seeds: {int(mv['seeds'])}, "
                f"{int(mg['seeds'])})")
        claim = f"{100 * s:.0f} % sparsity: movement >= magnitude pruning (final test acc, Fashion-MNIST from MNIST)"
        paper = "movement > magnitude at high sparsity (Sanh 2020, Fig. 2; no small-model result published)"
        if s in HIGH_END:
            checks.append(claim_check(claim, paper, ours, "means compared as they are, no margin", a >= b))
        else:
            checks.append(Check(claim=claim, paper=paper, ours=ours, tolerance="- (reported; the claim is about the high end)",
                                passed=None))
    for (m, s), r in sorted(at.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        checks.append(Check(claim=f"{m} at {100 * s:.0f} %: final test error, live units (in-h1-h2-out)", paper="-",
                            ours=f"error {pct(1 - float(r['test_acc_mean']))}; units {r.get('live_units', '') or '-'}",
                            tolerance="-", passed=None))
    return checks


def run_rows(runs: list[Path]) -> list[tuple[str, dict, dict, dict]]:
    """(run, config, level-0 row, trained row) of every run that reached its trained level."""
    from omegaconf import OmegaConf

    from pruneexp.results import RunStore

    out = []
    for run in runs:
        store = RunStore(run)
        rows = store.read_csv("levels.csv")
        trained = [r for r in rows if r["name"] == "trained"]
        if trained:
            cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
            out.append((run.name, cfg, rows[0], trained[-1]))
    return out


def check_runs(runs: list[Path]) -> list[Check]:
    """Checks of the code and recipe on each run: at its target sparsity, the same number of steps for
    both methods, and fine-tuning lowering the Fashion-MNIST error below the transferred start's."""
    rows = run_rows(runs)
    off = [f"{name} ({cfg['schedule']['name']}): {pct(float(t['sparsity']))} for {pct(cfg['sparsity'])}" for name, cfg, _, t in rows
           if abs(float(t["sparsity"]) - cfg["sparsity"]) > 1e-3]
    steps: dict[str, set[int]] = {}
    for _, cfg, _, t in rows:
        steps.setdefault(METHODS.get(cfg["schedule"]["name"], cfg["schedule"]["name"]), set()).add(int(float(t["train_steps"])))
    # the transferred network before fine-tuning: level 0 ("init") of the movement runs, the loaded weights
    start = max((float(z["test_acc"]) for _, _, z, _ in rows if z["name"] == "init"), default=math.nan)
    worse = [f"{name} ({cfg['schedule']['name']} {pct(cfg['sparsity'])}): {pct(1 - float(t['test_acc']))}" for name, cfg, _, t in rows
             if not float(t["test_acc"]) > start]
    return [
        Check(claim="every run ends at its target sparsity (of the pruned layers)", paper="-",
              ours="all at target" if not off else "off target: " + "; ".join(off), tolerance="|sparsity - target| <= 0.1 point",
              passed=not off and bool(rows)),
        Check(claim="movement and magnitude train for the same number of steps", paper="equal steps",
              ours="; ".join(f"{m}: {', '.join(map(str, sorted(v)))}" for m, v in steps.items()), tolerance="equal",
              passed=len(steps) == 2 and len(set().union(*steps.values())) == 1),
        Check(claim="fine-tuning lowers every run's Fashion-MNIST test error below the transferred MNIST network's (level 0)",
              paper="-", ours=(f"before fine-tuning: error {pct(1 - start)}; "
                               + ("every run lower" if not worse else "not lower: " + "; ".join(worse))),
              tolerance="strictly lower", passed=not worse and not math.isnan(start)),
    ]


register(Reproduction(
    name="movement_transfer",
    paper="Sanh, Wolf & Rush 2020, movement vs magnitude pruning during transfer fine-tuning",
    setups=setups(STEPS, SPARSITIES),
    check=check,
    ci=True,
    fast_setups=setups(FAST_STEPS, FAST_SPARSITIES),
    check_runs=check_runs,
    prepare=prepare,
    view=View(curve=lambda row: METHODS.get(str(row.get("schedule.name")), str(row.get("schedule.name"))), order=tuple(METHODS.values()),
              picture="sweep"),
))
