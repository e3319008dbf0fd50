"""Torchvision classification models (``source="torchvision"``), built untrained.

Architectures from their own papers (e.g. ResNet-18: He et al. 2016, "Deep Residual Learning
for Image Recognition"); construction via ``torchvision.models.get_model``.
"""

from __future__ import annotations

import torch
from torch import nn

from pruneexp.errors import PruneexpError

_LIST_HINT = "see the names with torchvision.models.list_models(module=torchvision.models)"


def torchvision_model_names() -> list[str]:
    """Names of torchvision's classification models (e.g. resnet18, He et al. 2016), sorted."""
    import torchvision  # imported here: it costs seconds at start-up and most runs never need it

    return sorted(torchvision.models.list_models(module=torchvision.models))


class RepeatChannels(nn.Module):
    """Repeat a 1-channel image to `channels` channels so RGB models (He et al. 2016 ResNets etc.)
    accept grayscale input; it has no parameters."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x.repeat(1, self.channels, 1, 1)


def build_torchvision(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build torchvision model `name` (its own paper, e.g. He et al. 2016 for resnet18) with random
    weights and `num_classes` outputs; a 1-channel input gets a RepeatChannels(3) module in front
    (the result is then ``nn.Sequential(RepeatChannels, model)``). A test forward on zeros (eval
    mode, no grad, no RNG use) turns shape failures into PruneexpError at construction time."""
    import torchvision

    names = torchvision_model_names()
    if name not in names:
        raise PruneexpError(f"Unknown torchvision model '{name}'; {_LIST_HINT}.")
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise PruneexpError(
            f"Torchvision model '{name}' needs an image input of shape (1 or 3, height, width), but got input shape {shape}."
        )
    try:
        model: nn.Module = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except (TypeError, ValueError) as exc:
        raise PruneexpError(f"Torchvision model '{name}' could not be built with num_classes={num_classes}: {exc}") from exc
    if shape[0] == 1:
        model = nn.Sequential(RepeatChannels(3), model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    except (RuntimeError, ValueError, AssertionError, IndexError) as exc:
        raise PruneexpError(
            f"Torchvision model '{name}' cannot take input shape {shape} (it needs larger images): {exc}".splitlines()[0]
        ) from exc
    finally:
        model.train(was_training)
    return model
