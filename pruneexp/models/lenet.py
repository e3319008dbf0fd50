"""LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition").

Modern variant: ReLU and max-pooling instead of tanh and subsampling, padding 2 on the first conv
so that 28x28 MNIST behaves like the paper's 32x32 input.
"""

from __future__ import annotations

import torch
from torch import nn

from pruneexp.models.base import MODELS, image_shape


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998): conv6(5x5, pad 2)-ReLU-pool - conv16(5x5)-ReLU-pool - fc120-fc84-fc.

    Needs an image input at least 10x10; the flatten size is computed from the input shape.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        c, h, w = image_shape(input_shape, "lenet5", min_size=10)
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register("lenet5")
def lenet5(input_shape: tuple[int, ...], num_classes: int) -> LeNet5:
    """LeNet-5 (LeCun et al. 1998)."""
    return LeNet5(input_shape, num_classes)
