"""Mid-training checkpoints (`hardware.checkpoint_every`): a run killed inside a training phase
continues from its last checkpoint, not from the start of the level, and ends with the files of a
run never stopped: for plain training and for every kind of sparsifier state (masks a sparsifier
edits, a parameter average, recorded mask updates, wrapped layers, scores)."""

from __future__ import annotations

import pytest
from faults import Faults, compare_runs, injected, run_killed_at

from conftest import TINY
from pruneexp.errors import PruneexpError
from pruneexp.runner import run, run_directory
from pruneexp.train.checkpoint import Checkpoint
from pruneexp.validate import validate

FAST = [*TINY, "hardware=cpu_1thread", "hardware.levels=none"]
NO_FINETUNE = [o for o in FAST if not o.startswith("schedule.finetune")]  # dst, gmp, movement train once
EVERY = ["hardware.checkpoint_every=2ep", "train.eval_every=1ep"]

CASES = {
    "oneshot": [*FAST],
    "imp_rewind": [*FAST, "schedule=imp", "schedule.levels=1", "schedule.rewind=5it", "train.duration=4ep"],
    "rigl": [*NO_FINETUNE, "schedule=dst", "schedule.method=rigl", "criterion=random", "prune.scope=erk", "sparsity=0.8",
             "train.duration=6ep", "schedule.update_every=5it"],
    "gmp": [*NO_FINETUNE, "schedule=gmp", "train.duration=6ep", "schedule.start=1ep", "schedule.end=4ep", "schedule.frequency=3it"],
    "movement": [*NO_FINETUNE, "schedule=movement", "train.duration=6ep", "schedule.end=4ep"],
    "l0_ema": [*FAST, "schedule=regularized", "regularizer=l0", "regularizer.ema=0.9", "train.duration=6ep"],
    "sparse_vd": [*FAST, "schedule=regularized", "regularizer=sparse_vd", "train.duration=6ep", "regularizer.kl_warmup=2ep"],
    "group_lasso": [*FAST, "schedule=regularized", "regularizer=group_lasso", "prune.granularity=channel", "train.duration=6ep"],
}


def checkpoint_writes(names: list[str]) -> list[int]:
    """Indices of the atomic writes that were checkpoints."""
    return [i for i, n in enumerate(names) if n.endswith(".pt") and "-" in n and not n.startswith("level_")]


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_killed_after_a_checkpoint_resumes_from_it_and_ends_as_if_never_stopped(case, make_cfg, tmp_path, monkeypatch):
    reference = make_cfg(*EVERY, *CASES[case], f"results_dir={tmp_path / 'reference'}")
    counted = run_killed_at(reference, None)
    writes = checkpoint_writes(counted.names)
    assert len(writes) >= 2, f"{case}: expected at least two checkpoints, wrote {counted.names}"
    assert not (run_directory(reference) / "checkpoints").exists()  # a complete run keeps none

    cfg = make_cfg(*EVERY, *CASES[case], f"results_dir={tmp_path / 'killed'}")
    killed = run_killed_at(cfg, ("write", writes[1], "after"))  # the second checkpoint written, then killed
    assert killed.dead, killed.where
    assert list((run_directory(cfg) / "checkpoints").glob("*.pt")), "the checkpoint survives the kill"

    used: list[int] = []
    real = Checkpoint.saved

    def spy(self):
        state = real(self)
        if state is not None:
            used.append(int(state["state"]["step"]))
        return state

    monkeypatch.setattr(Checkpoint, "saved", spy)
    run(cfg)
    assert used and used[0] > 0, f"{case}: the resumed run did not start from the checkpoint"
    assert compare_runs(run_directory(cfg), run_directory(reference)) == []
    assert not (run_directory(cfg) / "checkpoints").exists()


def test_a_torn_checkpoint_is_never_read_and_the_previous_one_is_used(make_cfg, tmp_path):
    """Killed while writing the second checkpoint: the torn temporary is cleaned and the first
    checkpoint (atomically written) carries the run on to the same files."""
    reference = make_cfg(*FAST, *EVERY, f"results_dir={tmp_path / 'reference'}")
    counted = run_killed_at(reference, None)
    cfg = make_cfg(*FAST, *EVERY, f"results_dir={tmp_path / 'killed'}")
    assert run_killed_at(cfg, ("write", checkpoint_writes(counted.names)[1], "torn")).dead
    with injected(Faults()):
        run(cfg)
    assert compare_runs(run_directory(cfg), run_directory(reference)) == []


def test_checkpoints_leave_the_run_hash_alone_and_bad_values_are_refused(make_cfg):
    assert run_directory(make_cfg(*FAST)) == run_directory(make_cfg(*FAST, "hardware.checkpoint_every=3ep"))
    for bad in ("0it", "soon"):
        with pytest.raises(PruneexpError, match="checkpoint_every|duration"):
            validate(make_cfg(*FAST, f"hardware.checkpoint_every={bad}"))
