"""The model registry and input-shape checks shared by every model family.

Each registered factory is called as ``factory(input_shape, num_classes, **kwargs)`` and returns
an ``nn.Module`` built from standard layers, defined in forward order. A factory that takes keyword
arguments registers their config schema with it (``@MODELS.register("mlp", config=WidthsConfig)``);
the schema's extra keys are the arguments, set from the command line as ``model.widths=[64,32]``.
"""

from __future__ import annotations

from typing import Any

from pruneexp.errors import PruneexpError
from pruneexp.registry import Registry

MODELS = Registry("model")


def image_shape(input_shape: tuple[int, ...], model: str, min_size: int) -> tuple[int, int, int]:
    """Check that `input_shape` is an image (C, H, W) with H and W at least `min_size`.

    Returns (C, H, W); raises PruneexpError with a one-sentence message otherwise.
    """
    shape = tuple(input_shape)
    need = f"Model '{model}' needs an image input of shape (channels, height, width) with height and width at least {min_size}"
    if len(shape) != 3:
        raise PruneexpError(f"{need}, but got input shape {shape}.")
    c, h, w = shape
    if h < min_size or w < min_size:
        raise PruneexpError(f"{need}, but got input shape {shape}.")
    return c, h, w


def example_batch(model: Any, batch: int, input_shape: tuple[int, ...], generator: Any = None, device: Any = None) -> Any:
    """A random input batch for measuring `model` (FLOPs, latency, shrink checks): token ids in
    [0, model.vocab_size) for a language model (one that sets `vocab_size`), standard normal
    values otherwise."""
    import torch

    vocab = getattr(model, "vocab_size", None)
    if vocab:
        x = torch.randint(0, int(vocab), (batch, *input_shape), generator=generator)
    else:
        x = torch.randn(batch, *input_shape, generator=generator)
    return x.to(device) if device is not None else x


def cast_input(x: Any, dtype: Any) -> Any:
    """x in the form's dtype; token ids (integers) stay as they are."""
    return x.to(dtype) if x.is_floating_point() else x
