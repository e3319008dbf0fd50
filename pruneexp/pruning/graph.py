"""The model's traced graph (torch.fx), with pruneexp's own layers kept whole.

fx traces into every module that is not one of torch.nn's own, so a subclass of a torch.nn layer
(models.pooling.MaxPool2d, whose forward picks a memory layout with Python control flow) would
fail to trace, and take its whole model with it. Here a module without children that subclasses a
torch.nn layer is a leaf, as the layer it extends is.
"""

from __future__ import annotations

from torch import fx, nn


class LayerTracer(fx.Tracer):
    """fx.Tracer that keeps subclasses of torch.nn's layers (modules without children) as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if super().is_leaf_module(m, module_qualified_name):
            return True
        built_in = any(c.__module__.startswith("torch.nn.modules") for c in type(m).__mro__[1:] if c is not nn.Module)
        return built_in and not any(True for _ in m.children())


def traced_graph(model: nn.Module) -> fx.Graph | None:
    """The graph of `model.forward` with layers as call_module nodes; None where fx cannot trace it
    (data-dependent control flow, e.g. a language model's generation loop)."""
    try:
        return LayerTracer().trace(model)
    except Exception:  # noqa: BLE001 - fx raises many kinds; any of them means "no graph"
        return None
