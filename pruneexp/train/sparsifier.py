"""The hook through which sparsity is learned during training (DESIGN.md, "Sparsity learned during
training"). The training loop calls, at every step,

    loss = task.loss(model(x), y) + sparsifier.penalty(model, step)
    loss.backward()
    if not sparsifier.before_step(model, step, masks, optimizer):   # the gradients are in p.grad
        optimizer.step()
    sparsifier.after_step(model, step, masks, optimizer)    # may edit masks, weights, optimizer state
    masks re-applied

so dynamic sparse training (drop/grow), proximal steps, thresholds and gradual pruning are each a
small class, and the loop stays one visible function. A sparsifier that edits masks writes them
through `MaskSet.set_` (or bumps `MaskSet.version`), so the loop's mask applier sees the change.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pruneexp.pruning.masks import MaskSet


class Sparsifier:
    """Base class: no penalty, no mask change. Subclasses override what their method needs."""

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        """The optimizer's parameter groups, where the method trains some parameters with their own
        hyperparameters (movement pruning: the scores at their own lr, Sanh et al.'s `mask_scores`
        group). Each group's "lr" is its base lr, which the LR schedule multiplies like `train.lr`.
        None (the default): one group, every parameter of the model at `train.lr`."""
        return None

    def penalty(self, model: nn.Module, step: int) -> Tensor | None:
        """A term added to the task loss at `step` (None: nothing added)."""
        return None

    def before_step(self, model: nn.Module, step: int, masks: MaskSet, optimizer: torch.optim.Optimizer) -> bool:
        """Called after `loss.backward()` of `step`, before the optimizer step, with the step's
        gradients in `p.grad` (dense: masked weights are zero, their gradients are not). Return True
        to skip this step's optimizer step (RigL: a mask update takes the place of the gradient step)."""
        return False

    def after_step(self, model: nn.Module, step: int, masks: MaskSet, optimizer: torch.optim.Optimizer) -> None:
        """Called after the optimizer step of `step` (0-based), before the masks are re-applied."""

    def log(self) -> dict[str, Any]:
        """Values written to the train log at each evaluation (e.g. the penalty weight)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What the method carries from step to step beyond the model's parameters, the masks and
        the optimizer (which a checkpoint holds anyway): plain tensors, numbers and strings. The
        default, nothing: a method whose every choice is a function of (seed, step) needs none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what `state_dict` gave, when training continues from a checkpoint."""


def reset_optimizer_state(optimizer: torch.optim.Optimizer, param: nn.Parameter, where: Tensor) -> None:
    """Zero the optimizer's per-weight state (SGD momentum, Adam's first and second moments) of
    `param` at the entries where `where` is True: a regrown connection starts with no history
    (Evci et al. 2020, RigL; Mocanu et al. 2018, SET). Step counters are shared and left as they are."""
    state = optimizer.state.get(param)
    if not state:
        return
    with torch.no_grad():
        for value in state.values():
            if isinstance(value, Tensor) and value.shape == param.shape:
                value.masked_fill_(where.to(value.device), 0)
