"""Weight initialisation schemes applied after a model is built.

- ``default``: PyTorch's own per-layer initialisation, left untouched.
- ``kaiming_normal``: He et al. 2015, "Delving Deep into Rectifiers" (fan-in, ReLU gain).
- ``glorot_normal``: Glorot & Bengio 2010, "Understanding the difficulty of training deep
  feedforward neural networks"; the scheme used by Frankle & Carbin 2019 (Lottery Ticket Hypothesis).
- ``glorot_uniform``: Glorot & Bengio 2010, uniform variant.
- ``normal``: N(0, 0.01²), Lasagne's `init.Normal()` default, used by Molchanov et al. 2017's
  reference code for sparse variational dropout.
- ``variance_scaling``: TensorFlow 1's `tf.variance_scaling_initializer()` at its defaults
  (scale 1, fan-in, truncated normal cut at 2 std, std sqrt(1/fan_in) / 0.8796 so that the
  truncated draw has variance 1/fan_in): the "vs" initialiser of SNIP (Lee et al. 2019,
  snip-public network.py).

Every non-default scheme sets each Conv/Linear weight and zeroes its bias; BatchNorm is untouched.
A scheme per layer kind is written `conv:<scheme>,linear:<scheme>` (a kind left out keeps PyTorch's
own): reference codes differ by kind, e.g. Molchanov et al. 2017's LeNet-5 (svdo-lasagne
lenet5-ard.py) draws its convolutions from Lasagne's GlorotUniform (its `W=init.Normal()` never
reaches the conv layer, whose argument is `Wconv`) and its dense layers from Normal(0.01):
`conv:glorot_uniform,linear:normal`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pruneexp.errors import PruneexpError

_WEIGHT_INITS: dict[str, Callable[[torch.Tensor], object]] = {
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),
    "glorot_normal": nn.init.xavier_normal_,
    "glorot_uniform": nn.init.xavier_uniform_,
    "normal": lambda w: nn.init.normal_(w, 0.0, 0.01),
    "variance_scaling": lambda w: variance_scaling_(w),
}

TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


def variance_scaling_(w: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """TF 1's variance_scaling_initializer (mode fan_in, truncated normal): N(0, s^2) cut at +-2 s,
    s = sqrt(scale / fan_in) / TRUNC_STD, which leaves the draw with variance scale / fan_in."""
    fan_in = nn.init._calculate_fan_in_and_fan_out(w)[0]
    std = (scale / fan_in) ** 0.5 / TRUNC_STD
    return nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)

INIT_SCHEMES: tuple[str, ...] = ("default", *_WEIGHT_INITS)

KINDS: dict[str, tuple[type, ...]] = {"conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d), "linear": (nn.Linear,)}


def parse_init(scheme: str) -> dict[str, str]:
    """{layer kind: scheme} of `scheme`: one of INIT_SCHEMES for every kind, or
    `conv:<scheme>,linear:<scheme>` (a kind not named keeps "default"). Raises PruneexpError on an
    unknown scheme or kind."""
    if not isinstance(scheme, str) or ":" not in scheme:
        if scheme not in INIT_SCHEMES:
            raise PruneexpError(f"Unknown init '{scheme}'. Known inits: {', '.join(INIT_SCHEMES)}, or one per layer kind "
                                f"as 'conv:<init>,linear:<init>'.")
        return dict.fromkeys(KINDS, scheme)
    out = dict.fromkeys(KINDS, "default")
    for part in scheme.split(","):
        kind, _, name = part.strip().partition(":")
        if kind not in KINDS or name not in INIT_SCHEMES or not part.count(":") == 1:
            raise PruneexpError(f"model.init='{scheme}': '{part}' is not <kind>:<init> with kind one of {', '.join(KINDS)} "
                                f"and init one of {', '.join(INIT_SCHEMES)}.")
        out[kind] = name
    return out


def check_init(scheme: str) -> None:
    """Raise PruneexpError unless `scheme` is one of INIT_SCHEMES (Glorot & Bengio 2010; He et al. 2015)
    or a scheme per layer kind (`parse_init`)."""
    parse_init(scheme)


def init_weights(model: nn.Module, scheme: str = "default") -> nn.Module:
    """Initialise every Conv/Linear weight of `model` in place with `scheme`, biases zero.

    Schemes: Glorot & Bengio 2010 (glorot_normal, as in Frankle & Carbin 2019; glorot_uniform),
    He et al. 2015 (kaiming_normal), or "default" (PyTorch's own, model left as built); one for all
    Conv/Linear layers or one per kind (`conv:<scheme>,linear:<scheme>`, see `parse_init`).
    Uses the global torch RNG; the caller seeds it. Returns `model`.
    """
    by_kind = parse_init(scheme)
    with torch.no_grad():
        for module in model.modules():
            kind = next((k for k, types in KINDS.items() if isinstance(module, types)), None)
            if kind is None or by_kind[kind] == "default":
                continue
            _WEIGHT_INITS[by_kind[kind]](module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
