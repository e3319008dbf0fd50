"""Which levels of a run are timed, and their latency rows: `pruneexp run` feeds every level to a
LevelTimer as the schedule yields it (`hardware.levels`: all, ends = first and last, final, none)."""

from __future__ import annotations

from typing import Any

from torch import nn

from pruneexp.measure.latency import Target, measure_level
from pruneexp.pruning.masks import MaskSet


class LevelTimer:
    """Times the levels `hardware.levels` selects, while the level's model is current.

    `seen(...)` is called for every level in order; `finish(...)` once after the last one (the
    final level is only known then). Rows accumulate in `rows` (latency.csv)."""

    def __init__(self, hw: Any, input_shape: tuple[int, ...], seed: int = 0):
        self.target = Target.from_config(hw)
        self.choice = str(hw.levels)
        self.input_shape = tuple(input_shape)
        self.seed = seed
        self.rows: list[dict[str, Any]] = []
        self._timed: set[int] = set()
        self._count = 0

    def _time(self, level: int, name: str, model: nn.Module, masks: MaskSet, flop_ratio: float | None,
              connected_flop_ratio: float | None = None) -> None:
        self.rows.extend(measure_level(model, masks, self.input_shape, self.target, level=level, name=name,
                                       flop_ratio=flop_ratio, connected_flop_ratio=connected_flop_ratio, seed=self.seed))
        self._timed.add(level)

    def seen(self, level: int, name: str, model: nn.Module, masks: MaskSet, flop_ratio: float | None,
             connected_flop_ratio: float | None = None) -> bool:
        """Time this level now if it is selected without knowing the last level; True if timed."""
        first = self._count == 0
        self._count += 1
        if self.choice == "all" or (self.choice == "ends" and first):
            self._time(level, name, model, masks, flop_ratio, connected_flop_ratio)
            return True
        return False

    def finish(self, level: int, name: str, model: nn.Module, masks: MaskSet, flop_ratio: float | None,
             connected_flop_ratio: float | None = None) -> bool:
        """Time the final level (ends, final) if not timed yet; True if timed."""
        if self.choice in ("ends", "final") and level not in self._timed:
            self._time(level, name, model, masks, flop_ratio, connected_flop_ratio)
            return True
        return False
