"""The model's traced graph (torch.fx), with pruneexp's own layers kept whole, traced once per
model structure.

fx traces into every module that is not one of torch.nn's own, so a subclass of a torch.nn layer
(models.pooling.MaxPool2d, whose forward picks a memory layout with Python control flow) would
fail to trace, and take its whole model with it. Here a module without children that subclasses a
torch.nn layer is a leaf, as the layer it extends is.
"""

from __future__ import annotations

import weakref
from typing import Any

from torch import fx, nn


class LayerTracer(fx.Tracer):
    """fx.Tracer that keeps subclasses of torch.nn's layers (modules without children) as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if super().is_leaf_module(m, module_qualified_name):
            return True
        built_in = any(c.__module__.startswith("torch.nn.modules") for c in type(m).__mro__[1:] if c is not nn.Module)
        return built_in and not any(True for _ in m.children())


# model -> (structure_key, graph): dies with the model, so a new model never meets an old one's graph
_GRAPHS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], fx.Graph | None]] = weakref.WeakKeyDictionary()


def structure_key(model: nn.Module) -> tuple[Any, ...]:
    """What a traced graph depends on that a run can change in place: every submodule's name,
    identity, type and train/eval mode (a sparsifier that wraps layers, e.g. sparse VD or L0,
    swaps modules; a forward may branch on `self.training`), and every parameter's name and shape."""
    return (tuple((name, id(m), type(m), m.training) for name, m in model.named_modules()),
            tuple((name, tuple(p.shape)) for name, p in model.named_parameters()))


def traced_graph(model: nn.Module) -> fx.Graph | None:
    """The graph of `model.forward` with layers as call_module nodes; None where fx cannot trace it
    (data-dependent control flow, e.g. a language model's generation loop). Traced once per
    `structure_key` of the model: level records (chains, effective sparsity) and channel
    footprints ask on every level (5-60 ms a trace), and gmp and dst write many levels. The graph
    is shared between callers: read it, never edit it."""
    key = structure_key(model)
    hit = _GRAPHS.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        graph = LayerTracer().trace(model)
    except Exception:  # noqa: BLE001 - fx raises many kinds; any of them means "no graph"
        graph = None
    _GRAPHS[model] = (key, graph)
    return graph
