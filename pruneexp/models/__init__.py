"""Model zoo: `create_model(name, input_shape, num_classes, ...)` and the `MODELS` registry.

pruneexp models (each family's module names its paper):
- ``mlp``, ``lenet_300_100``: LeCun et al. 1998; Frankle & Carbin 2019.
- ``lenet5``: LeCun et al. 1998.
- ``conv2``, ``conv4``, ``conv6``: Frankle & Carbin 2019 (Lottery Ticket Hypothesis).
- ``vgg11``, ``vgg16``: Simonyan & Zisserman 2015 (CIFAR form with BatchNorm, as OpenLTH).
- ``resnet20``, ``resnet56``: He et al. 2016 (CIFAR ResNets).
plus any torchvision classification model with ``source="torchvision"``.

Every model uses standard nn modules, each used once per forward, defined in forward order;
the classifier is the last nn.Linear in ``model.modules()`` order.
"""

from __future__ import annotations

import inspect
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from pruneexp.errors import PruneexpError
from pruneexp.models.base import MODELS
from pruneexp.registry import import_modules
from pruneexp.models.init import INIT_SCHEMES, check_init, init_weights
from pruneexp.models.tv import torchvision_model_names, build_torchvision

SOURCES = ("pruneexp", "torchvision")
import_modules(__name__)  # every module of this package registers its models: a new model is a new file

__all__ = ["MODELS", "SOURCES", "INIT_SCHEMES", "create_model", "init_weights", "load_weights", "model_from_config", "torchvision_model_names"]


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in shape):
        raise PruneexpError(f"Input shape must be a non-empty tuple of positive integers (no batch), but got {input_shape!r}.")
    return shape


def create_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    source: str = "pruneexp",
    init: str = "default",
    **kwargs: Any,
) -> nn.Module:
    """Build model `name` for inputs of `input_shape` (no batch dim) with `num_classes` logits;
    `kwargs` go to the model's constructor (timm's `create_model(name, **kwargs)`), e.g.
    `widths=[300, 100]` for ``mlp``.

    `source` is "pruneexp" (the registry: LeCun et al. 1998, Frankle & Carbin 2019, Simonyan &
    Zisserman 2015, He et al. 2016) or "torchvision". `init` is one of INIT_SCHEMES (Glorot &
    Bengio 2010; He et al. 2015). Does not seed: the caller sets the seed. Raises PruneexpError for
    unknown names/sources/inits, arguments the model does not take, or unsupported shapes.
    """
    check_init(init)
    shape = _check_shape(input_shape)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise PruneexpError(f"num_classes must be a positive integer, but got {num_classes!r}.")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # None: the constructor's default
    if source == "pruneexp":
        factory = MODELS.get(name)
        takes = set(inspect.signature(factory).parameters) - {"input_shape", "num_classes"}
        unknown = sorted(set(kwargs) - takes)
        if unknown:
            raise PruneexpError(f"Model '{name}' does not take {', '.join(unknown)}; it takes: {', '.join(sorted(takes)) or 'no arguments'}.")
        model = factory(shape, num_classes, **kwargs)
    elif source == "torchvision":
        if kwargs:
            raise PruneexpError(f"Torchvision model '{name}' takes no model arguments here (got {', '.join(sorted(kwargs))}).")
        model = build_torchvision(name, shape, num_classes)
    else:
        raise PruneexpError(f"Unknown model source '{source}'. Known sources: {', '.join(SOURCES)}.")
    return init_weights(model, init)


def model_from_config(cfg: Any, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """`create_model` from a model config node: name, source and init, every other key a
    constructor argument."""
    node = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    name, source, init = node.pop("name"), node.pop("source", "pruneexp"), node.pop("init", "default")
    node.pop("weights", None)  # trained weights loaded over the drawn ones: `load_weights`, by the caller
    return create_model(name, input_shape, num_classes, source=source, init=init, **node)


def load_weights(model: nn.Module, path: str) -> nn.Module:
    """Load the weights file `path` into `model` (`model.weights`): a state_dict, or a dict holding
    one under "model" (a pruneexp level file or dense.pt), read with torch.load(weights_only=True).
    A state_dict of the network pruneexp wraps loads too (its keys without the wrapper's prefix:
    transformers' own for model=hf, torchvision's for a 1-channel torchvision model). Every tensor of the model must be in it with the model's shape: a missing file, a file that is not
    weights, missing or extra keys and shape mismatches are PruneexpErrors naming them."""
    import torch

    what = f"model.weights={path}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise PruneexpError(f"{what}: cannot read the weights file ({err.strerror or err}).") from None
    except Exception as err:  # torch's zip reader and the restricted unpickler raise many kinds
        raise PruneexpError(f"{what}: not a weights file torch.load(weights_only=True) can read ({type(err).__name__}: {err}).") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PruneexpError(f"{what}: holds no state_dict (a dict of tensors, or one under the key 'model').")
    own = model.state_dict()
    state = _with_wrapper_prefix(state, own)
    missing, extra = [k for k in own if k not in state], [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or extra or shapes:
        parts = [f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
                 for label, items in (("missing", missing), ("not in the model", extra), ("shape (file vs model)", shapes)) if items]
        raise PruneexpError(f"{what} does not fit model={model.__class__.__name__} on this dataset ({'; '.join(parts)}): "
                            f"the source network must have the same architecture, input shape and number of classes.")
    model.load_state_dict(state)
    return model


def _with_wrapper_prefix(state: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """`state` with its keys prefixed by P when P + key gives exactly the keys of `own` (a file of the
    module a pruneexp model wraps: "model." for model=hf, "1." behind RepeatChannels); else as it is."""
    if not state or set(state) == set(own):
        return state
    first = next(iter(state))
    for key in own:
        prefix = key[: -len(first)]
        if key.endswith(first) and prefix.endswith(".") and {prefix + k for k in state} == set(own):
            return {prefix + k: v for k, v in state.items()}
    return state
