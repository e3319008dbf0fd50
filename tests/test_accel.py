"""How the training step runs (pruneexp/train/accel.py): `train.precision` (bf16, fp16 with a
GradScaler), `hardware.channels_last`, `train.compile`. Each gives a run that trains and records,
enters the run hash away from its neutral value, keeps masks exact, and resumes exactly."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from faults import compare_runs, run_killed_at
from test_checkpoint import checkpoint_writes
from test_train import cfg, toy_data, toy_model

from conftest import TINY
from pruneexp.config import hash_view
from pruneexp.errors import PruneexpError, TrainingDiverged
from pruneexp.pruning.masks import MaskSet, prunable_weights
from pruneexp.pruning.select import select
from pruneexp.runner import run, run_directory
from pruneexp.train import accel, train
from pruneexp.validate import validate

FAST = [*TINY, "hardware=cpu_1thread", "hardware.levels=none"]
SWITCHES = {"bf16": ["train.precision=bf16"], "fp16": ["train.precision=fp16"],
            "channels_last": ["hardware.channels_last=true", "model=conv2"], "compile": ["train.compile=true"]}
NEUTRAL = ["train.precision=fp32", "hardware.channels_last=false", "train.compile=false"]


def pruned_toy():
    """The toy MLP with 70 % of its weights masked (seeded scores)."""
    model = toy_model()
    g = torch.Generator().manual_seed(1)
    scores = {n: torch.rand(p.shape, generator=g) for n, p in prunable_weights(model).items()}
    masks = select(scores, 0.7, MaskSet.dense(prunable_weights(model)))
    masks.apply_(model)
    return model, masks


def test_each_switch_enters_the_hash_and_the_neutral_values_leave_it_as_it_was(make_cfg):
    base = make_cfg(*FAST)
    assert run_directory(make_cfg(*FAST, *NEUTRAL)) == run_directory(base)
    view = hash_view(dict(train=dict(base.train), hardware=dict(base.hardware)))
    assert "precision" not in view["train"] and "compile" not in view["train"] and "channels_last" not in view["hardware"]
    others = {name: run_directory(make_cfg(*FAST, over[0])) for name, over in SWITCHES.items()}
    assert len({run_directory(base), *others.values()}) == 1 + len(SWITCHES)


def test_bad_values_are_refused_before_training(make_cfg, monkeypatch):
    with pytest.raises(PruneexpError, match="Unknown train.precision 'fp8'; known: fp32, bf16, fp16"):
        validate(make_cfg(*FAST, "train.precision=fp8"))
    # no C++ compiler: a clear error, never a silent eager run
    accel.check_compile.cache_clear()
    monkeypatch.setattr("shutil.which", lambda name: None)
    try:
        with pytest.raises(PruneexpError, match="train.compile=true: .* needs the C\\+\\+ compiler"):
            validate(make_cfg(*FAST, "train.compile=true"))
    finally:
        accel.check_compile.cache_clear()


@pytest.mark.parametrize("switch", ["bf16", "fp16", "channels_last"])
def test_each_switch_gives_a_run_that_trains_and_records(switch, make_cfg):
    c = make_cfg(*FAST, *SWITCHES[switch])
    outcome = run(c)
    levels = pd.read_csv(outcome.directory / "levels.csv")
    assert list(levels["name"]) == ["dense", "pruned", "finetuned"]
    assert levels["val_acc"].iloc[0] > 0.5  # digits, 10 classes: it learned
    log = pd.read_csv(outcome.directory / "train_log.csv")
    assert log["train_loss"].map(math.isfinite).all()
    assert ("loss_scale" in log) == (switch == "fp16")
    level = torch.load(outcome.directory / "levels" / "level_002.pt", weights_only=True)
    for name, mask in level["masks"]["masks"].items():  # masks re-applied after every step, in either layout
        assert not level["model"][name][~mask].any()
    if switch == "channels_last":
        conv = next(v for v in level["model"].values() if v.dim() == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last)


def test_bf16_and_fp16_losses_stay_close_to_fp32():
    data = toy_data()
    losses = {}
    for precision in ("fp32", "bf16", "fp16"):
        model, masks = pruned_toy()
        result = train(model, data, masks, cfg(duration="4it", eval_every="2it", precision=precision), seed=0, quiet=True)
        losses[precision] = [row["train_loss"] for row in result.log] + [result.val_loss]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)  # 8 mantissa bits: ~0.4 % per rounding
    assert losses["fp16"] == pytest.approx(losses["fp32"], rel=2e-3)  # 11 bits
    assert losses["bf16"] != losses["fp32"]  # autocast was on


def test_fp16_skips_overflowed_steps_without_calling_them_divergence(monkeypatch):
    """A loss scale of 2^30 overflows the fp16 gradients: the GradScaler skips those steps and halves
    the scale until they fit; the loop counts them and trains on. A learning rate that blows the
    weights up is still divergence."""
    monkeypatch.setattr(accel, "grad_scaler", lambda precision, device: torch.amp.GradScaler(device.type, init_scale=2.0**30))
    model, masks = pruned_toy()
    result = train(model, toy_data(), masks, cfg(duration="40it", eval_every="20it", precision="fp16"), seed=0, quiet=True)
    assert result.log[0]["skipped_steps"] > 0 and result.log[0]["loss_scale"] < 2.0**30
    assert result.log[1]["skipped_steps"] == 0 and math.isfinite(result.log[1]["train_loss"])
    assert result.val_acc > 0.5
    monkeypatch.undo()
    with pytest.raises(TrainingDiverged, match="phase 'dense'"):
        train(toy_model(), toy_data(), MaskSet.dense(prunable_weights(toy_model())),
              cfg(duration="200it", eval_every="10it", lr=1e4, precision="fp16"), seed=0, quiet=True, phase="dense")


def test_fp16_scaler_state_survives_a_checkpoint_and_resume(make_cfg, tmp_path, monkeypatch):
    """growth_interval=3 makes the loss scale move within a few steps (up, then down on overflow);
    the log records it, so a resumed run whose scaler restarted would differ from the reference."""
    monkeypatch.setattr(accel, "grad_scaler", lambda precision, device: torch.amp.GradScaler(device.type, growth_interval=3))
    over = [*FAST, "train.precision=fp16", "hardware.checkpoint_every=2ep", "train.eval_every=1ep"]
    reference = make_cfg(*over, f"results_dir={tmp_path / 'reference'}")
    counted = run_killed_at(reference, None)
    log = pd.read_csv(run_directory(reference) / "train_log.csv")
    assert log["loss_scale"].nunique() > 2, "the scale should move in this test"
    writes = checkpoint_writes(counted.names)
    assert len(writes) >= 2
    killed = make_cfg(*over, f"results_dir={tmp_path / 'killed'}")
    assert run_killed_at(killed, ("write", writes[1], "after")).dead
    saved = torch.load(next((run_directory(killed) / "checkpoints").glob("*.pt")), weights_only=True)
    assert saved["state"]["scaler"]["scale"] != 65536.0 or saved["state"]["scaler"]["_growth_tracker"] > 0
    run(killed)
    assert compare_runs(run_directory(killed), run_directory(reference)) == []


def test_compile_gives_the_masks_and_losses_of_eager(make_cfg, tmp_path):
    """The compiled step shares the model's parameters: masks re-applied to them hold, and a short
    oneshot run (train, prune, fine-tune) ends with eager's masks and losses to float tolerance."""
    from torch._dynamo.utils import counters

    over = [*FAST, "train.duration=2ep", "schedule.finetune.duration=1ep"]
    eager = run(make_cfg(*over, f"results_dir={tmp_path / 'eager'}"))
    torch._dynamo.reset()  # a graph of this model compiled earlier in the process would be reused, not counted
    before = counters["stats"]["unique_graphs"]
    compiled = run(make_cfg(*over, "train.compile=true", f"results_dir={tmp_path / 'compiled'}"))
    assert counters["stats"]["unique_graphs"] > before, "torch.compile compiled nothing"
    a, b = (pd.read_csv(o.directory / "levels.csv") for o in (eager, compiled))
    for col in ("val_loss", "test_loss"):
        assert b[col].to_numpy() == pytest.approx(a[col].to_numpy(), rel=1e-4)
    for k in range(3):
        la, lb = (torch.load(o.directory / "levels" / f"level_{k:03d}.pt", weights_only=True) for o in (eager, compiled))
        assert MaskSet.from_state_dict(la["masks"]).equal(MaskSet.from_state_dict(lb["masks"]))
        for name, mask in lb["masks"]["masks"].items():
            assert not lb["model"][name][~mask].any()


def test_rigl_drops_and_grows_channels_last_weights_in_place(make_cfg):
    """Dynamic sparse training edits weights entry by entry (drop to zero, grow at init): in NHWC
    memory order the entries are the same logical ones, and the masks still hold."""
    c = make_cfg(*[o for o in FAST if not o.startswith("schedule.finetune")], "hardware.channels_last=true", "model=conv2",
                 "schedule=dst", "schedule.method=rigl", "criterion=random", "prune.scope=erk", "sparsity=0.8",
                 "train.duration=3ep", "schedule.update_every=5it")
    outcome = run(c)
    levels = pd.read_csv(outcome.directory / "levels.csv")
    assert levels["sparsity"].iloc[-1] == pytest.approx(0.8, abs=1e-3)
    last = sorted((outcome.directory / "levels").glob("level_*.pt"))[-1]
    level = torch.load(last, weights_only=True)
    for name, mask in level["masks"]["masks"].items():
        assert not level["model"][name][~mask].any()
