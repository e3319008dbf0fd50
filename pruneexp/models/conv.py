"""Conv-2, Conv-4 and Conv-6: the small VGG-like CIFAR-10 networks of Frankle & Carbin 2019,
"The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks" (Fig. 2 / Table 1).

3x3 convs with padding 1 and ReLU, a 2x2 max-pool after every pair, then fc256-fc256-fc(num_classes).
"""

from __future__ import annotations

from torch import nn

from pruneexp.models.base import MODELS, image_shape
from pruneexp.models.pooling import MaxPool2d

CONV_PLANS: dict[str, list[int]] = {
    "conv2": [64, 64],
    "conv4": [64, 64, 128, 128],
    "conv6": [64, 64, 128, 128, 256, 256],
}


class ConvNet(nn.Module):
    """Conv-2/4/6 of Frankle & Carbin 2019: pairs of 3x3 convs each followed by a max-pool,
    then Linear 256, Linear 256, Linear num_classes. Needs spatial size >= 2**(pairs)."""

    def __init__(self, name: str, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        plan = CONV_PLANS[name]
        pools = len(plan) // 2
        c, h, w = image_shape(input_shape, name, min_size=2**pools)
        layers: list[nn.Module] = []
        for i, out in enumerate(plan):
            layers += [nn.Conv2d(c, out, kernel_size=3, padding=1), nn.ReLU()]
            c = out
            if i % 2 == 1:
                layers.append(MaxPool2d(2))
                h, w = h // 2, w // 2
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c * h * w, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register("conv2")
def conv2(input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    """Conv-2 (Frankle & Carbin 2019): 64, 64, pool; fc 256, 256, num_classes."""
    return ConvNet("conv2", input_shape, num_classes)


@MODELS.register("conv4")
def conv4(input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    """Conv-4 (Frankle & Carbin 2019): 64, 64, pool, 128, 128, pool; fc 256, 256, num_classes."""
    return ConvNet("conv4", input_shape, num_classes)


@MODELS.register("conv6")
def conv6(input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    """Conv-6 (Frankle & Carbin 2019): 64, 64, pool, 128, 128, pool, 256, 256, pool; fc 256, 256, num_classes."""
    return ConvNet("conv6", input_shape, num_classes)
