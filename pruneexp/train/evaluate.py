"""Loss and accuracy of a classifier on resident tensors (the `classification` task's metrics)."""

from __future__ import annotations

from torch import Tensor, nn

from pruneexp.train.task import TASKS


def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 2000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` in eval mode over (x, y); see `Task.evaluate`."""
    metrics = TASKS.get("classification").evaluate(model, x, y, batch_size)
    return metrics["loss"], metrics["acc"]
