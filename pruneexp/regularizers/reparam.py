"""What the regularizers that reparameterise layers share (sparse variational dropout, L0 gates):
each prunable nn.Linear is replaced by a wrapped layer for training, and folded back at the end to
a plain nn.Linear plus its keep-mask, so measure, shrink and report see an ordinary masked network."""

from __future__ import annotations

from typing import Callable

from torch import nn

from pruneexp.pruning.masks import MaskSet, owner_name
from pruneexp.train.sparsifier import Sparsifier


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at the dotted path `name` of `model` (the root's child when there is no dot)."""
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


class WrapsLinears(Sparsifier):
    """A sparsifier that wraps linear layers (`wrap_linears`) and folds them back (`fold`). A wrapped
    layer has `fold() -> (nn.Linear, keep bool tensor of the weight's shape)`."""

    method = ""  # the regularizer's name, for messages

    def __init__(self) -> None:
        self.layers: dict[str, nn.Module] = {}

    def wrap_linears(self, model: nn.Module, prunable: dict[str, nn.Parameter], make: Callable[[nn.Linear], nn.Module],
                     frozen: tuple[str, ...] = ()) -> None:
        """Replace the layer of every prunable weight (but those in `frozen`) by `make(layer)`."""
        for name in prunable:
            if name in frozen:
                continue
            layer = model.get_submodule(owner_name(name))
            if not isinstance(layer, nn.Linear):
                raise TypeError(f"{self.method} wraps Linear layers only; {owner_name(name)} is {type(layer).__name__}")
            wrapped = make(layer)
            set_module(model, owner_name(name), wrapped)
            self.layers[name] = wrapped

    def fold(self, model: nn.Module, masks: MaskSet) -> MaskSet:
        """Replace every wrapped layer by its plain nn.Linear and return `masks` narrowed by the keeps."""
        new = masks.clone()
        for name, wrapped in self.layers.items():
            linear, keep = wrapped.fold()
            set_module(model, owner_name(name), linear)
            new.set_(name, keep & masks[name])
        self.layers = {}
        return new


__all__ = ["WrapsLinears", "set_module"]
