"""Checkpoints taken inside one `train()` call, so that a run killed mid-training (a preempted
cluster job, a laptop closed, a session's time running out) continues from its last checkpoint
instead of from the start of the level, and ends with the same bits as a run never stopped.

A checkpoint is taken at an evaluation step (where the running training loss has just been
reset), at most every `hardware.checkpoint_every`, and holds all the loop depends on: the
TrainState (weights, optimizer state, CPU and CUDA generators), the masks (a sparsifier may have
edited them), the sparsifier's own state, the training result so far (log rows, snapshots, the
early-stop figures) and the weights kept for the deferred test. The data order, augmentation and
learning rate are functions of (seed, step), so nothing else is needed. Like OpenLTH's
`checkpoint.pt`, but for every schedule and sparsifier.

Written here because the loop's own state (the deferred test's weights, the sparsifier) is ours;
torch's `save`/`load(weights_only=True)` do the storing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Checkpoint:
    """Where one training segment keeps its checkpoint: `every` (a duration, "5ep" or "2000it"),
    `name` (the file of the segment, `checkpoint_name`), and the run's file store: `load(name)` (the
    saved dict, or None) and `save(name, state)` (atomic). The name is also written into the file;
    a file holding another name is not used."""

    every: str
    name: str
    load: Callable[[str], "dict[str, Any] | None"]
    save: Callable[[str, dict[str, Any]], None]

    def saved(self) -> dict[str, Any] | None:
        """The checkpoint of this segment, or None (none yet, or a file of another segment)."""
        state = self.load(self.name)
        return state if state is not None and state.get("key") == self.name else None

    def write(self, state: dict[str, Any]) -> None:
        """Save `state` as this segment's checkpoint, stamped with its name."""
        self.save(self.name, {"key": self.name, **state})


def checkpoint_name(phase: str, level: int, start: int, stop: int | None) -> str:
    """The file of one training segment: checkpoints/<phase>_<level>_<start>-<stop|end>.pt."""
    return f"checkpoints/{phase}_{level:03d}_{start}-{'end' if stop is None else stop}.pt"


__all__ = ["Checkpoint", "checkpoint_name"]
