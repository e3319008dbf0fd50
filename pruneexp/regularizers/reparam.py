"""What the regularizers that reparameterise layers share (sparse variational dropout, L0 gates):
each prunable layer (nn.Linear; for sparse VD nn.Conv2d too) is replaced by a wrapped layer for
training, and folded back at the end to a plain layer of the same kind plus its keep-mask, so
measure, shrink and report see an ordinary masked network."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from pruneexp.pruning.masks import MaskSet, owner_name
from pruneexp.train.sparsifier import Sparsifier


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at the dotted path `name` of `model` (the root's child when there is no dot)."""
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


class Wrapped(nn.Module):
    """A trainable copy of a plain layer (nn.Linear or nn.Conv2d): its `weight` and `bias` as
    parameters, and what `plain()` needs to build the folded layer of the same kind and shape."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.kind = type(layer)
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
                raise TypeError(f"convolutions with padding_mode={layer.padding_mode!r} / padding={layer.padding!r} "
                                f"are not wrapped (zero padding given as numbers only)")
            self.conv = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
            self.shape_args = (layer.in_channels, layer.out_channels, layer.kernel_size)
        else:
            self.conv = None
            self.shape_args = (layer.in_features, layer.out_features)
        self.weight = nn.Parameter(layer.weight.detach().clone())
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())

    def plain(self, weight: Tensor, bias: Tensor | None) -> nn.Module:
        """A plain layer of the wrapped kind holding `weight` and `bias` (the fold)."""
        out = self.kind(*self.shape_args, bias=self.bias is not None, **(self.conv or {})).to(self.weight.device)
        with torch.no_grad():
            out.weight.copy_(weight)
            if bias is not None:
                out.bias.copy_(bias)
        return out


class WrapsLayers(Sparsifier):
    """A sparsifier that wraps layers (`wrap_layers`: nn.Linear, and the kinds in `kinds`) and folds
    them back (`fold`). A wrapped layer has `fold() -> (plain layer, keep bool tensor of the weight's
    shape)`. Holds the regularizer's config, its `strength` and the training-set size N."""

    method = ""  # the regularizer's name, for messages
    kinds: tuple[type, ...] = (nn.Linear,)  # the layer kinds it wraps

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.strength = float(cfg.strength)
        self.n_train = 1
        self.layers: dict[str, nn.Module] = {}

    def wrap_layers(self, model: nn.Module, prunable: dict[str, nn.Parameter], make: Callable[[nn.Module], nn.Module],
                    frozen: tuple[str, ...] = ()) -> None:
        """Replace the layer of every prunable weight (but those in `frozen`) by `make(layer)`."""
        for name in prunable:
            if name in frozen:
                continue
            layer = model.get_submodule(owner_name(name))
            if not isinstance(layer, self.kinds):
                known = ", ".join(k.__name__ for k in self.kinds)
                raise TypeError(f"{self.method} wraps {known} layers only; {owner_name(name)} is {type(layer).__name__}")
            wrapped = make(layer)
            set_module(model, owner_name(name), wrapped)
            self.layers[name] = wrapped

    def fold(self, model: nn.Module, masks: MaskSet) -> MaskSet:
        """Replace every wrapped layer by its plain layer and return `masks` narrowed by the keeps."""
        new = masks.clone()
        for name, wrapped in self.layers.items():
            layer, keep = wrapped.fold()
            set_module(model, owner_name(name), layer)
            new.set_(name, keep & masks[name])
        self.layers = {}
        return new


__all__ = ["Wrapped", "WrapsLayers", "set_module"]
