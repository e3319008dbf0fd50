"""Durations written as "40ep" (epochs) or "5000it" (iterations), as in OpenLTH."""

from __future__ import annotations

import re

from pruneexp.errors import PruneexpError

_DURATION = re.compile(r"^\s*(\d+)\s*(ep|it)\s*$")


def to_steps(duration: str, steps_per_epoch: int) -> int:
    """Number of optimizer steps in a duration: "40ep" -> 40 * steps_per_epoch, "5000it" -> 5000."""
    match = _DURATION.match(str(duration))
    if not match:
        raise PruneexpError(f"Cannot read duration '{duration}': write it as '<n>ep' (epochs) or '<n>it' (iterations), e.g. '40ep' or '5000it'.")
    n, unit = int(match.group(1)), match.group(2)
    return n * steps_per_epoch if unit == "ep" else n


def check(duration: str) -> None:
    to_steps(duration, 1)
