"""Fully connected networks: ``mlp``, ``residual_mlp`` and the ``lenet_300_100`` preset.

LeNet-300-100 is from LeCun et al. 1998, "Gradient-based learning applied to document
recognition", and is the MNIST network of Frankle & Carbin 2019, "The Lottery Ticket Hypothesis".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

from torch import nn

from pruneexp.config import ModelConfig
from pruneexp.errors import PruneexpError
from pruneexp.models.base import MODELS

DEFAULT_WIDTHS = [300, 100]


class MLP(nn.Module):
    """Flatten -> (Linear, ReLU) per hidden width -> Linear(num_classes).

    The multilayer perceptron of LeCun et al. 1998 (LeNet-300-100 with widths [300, 100]),
    as used by Frankle & Carbin 2019. Accepts any input shape (it is flattened).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, widths: list[int] | None = None):
        super().__init__()
        widths = list(DEFAULT_WIDTHS if widths is None else widths)
        if any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
            raise PruneexpError(f"Model 'mlp' needs widths to be a list of positive integers, but got {widths}.")
        in_features = math.prod(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for width in widths:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.layers = nn.Sequential(*layers)
        self.widths = widths

    def forward(self, x):
        return self.layers(x)


class ResidualMLP(nn.Module):
    """The MLP of Greydanus 2020 ("Scaling Down Deep Learning", MNIST-1D lottery-ticket notebook):
    h_1 = ReLU(W_1 x);  h_k = h_{k-1} + ReLU(W_k h_{k-1}) for k >= 2;  y = W_out h_K.
    Every hidden layer after the first has a skip connection, so all hidden widths must be equal."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, widths: list[int] | None = None):
        super().__init__()
        widths = list([500, 500] if widths is None else widths)
        if not widths or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths) or len(set(widths)) > 1:
            raise PruneexpError(f"Model 'residual_mlp' needs equal positive hidden widths (its skips add them), but got {widths}.")
        self.flatten = nn.Flatten()
        self.hidden = nn.ModuleList(nn.Linear(math.prod(input_shape) if i == 0 else w, w) for i, w in enumerate(widths))
        self.out = nn.Linear(widths[-1], num_classes)
        self.widths = widths

    def forward(self, x):
        h = self.flatten(x)
        for i, layer in enumerate(self.hidden):
            h = layer(h).relu() if i == 0 else h + layer(h).relu()
        return self.out(h)


@dataclass
class WidthsConfig(ModelConfig):
    widths: Optional[List[int]] = None  # hidden widths; None: the model's default


@MODELS.register("residual_mlp", config=WidthsConfig)
def residual_mlp(input_shape: tuple[int, ...], num_classes: int, widths: list[int] | None = None) -> ResidualMLP:
    """MLP with skip connections around every hidden layer after the first (Greydanus 2020, the
    MNIST-1D lottery-ticket network, widths [500, 500])."""
    return ResidualMLP(input_shape, num_classes, widths)


@MODELS.register("mlp", config=WidthsConfig)
def mlp(input_shape: tuple[int, ...], num_classes: int, widths: list[int] | None = None) -> MLP:
    """Multilayer perceptron (LeCun et al. 1998); hidden widths default to [300, 100]."""
    return MLP(input_shape, num_classes, widths)


@MODELS.register("lenet_300_100")
def lenet_300_100(input_shape: tuple[int, ...], num_classes: int) -> MLP:
    """LeNet-300-100 (LeCun et al. 1998; Frankle & Carbin 2019): mlp with widths [300, 100]."""
    return MLP(input_shape, num_classes, [300, 100])
