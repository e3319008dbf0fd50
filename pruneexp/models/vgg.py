"""CIFAR VGG-11 and VGG-16: Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", in the CIFAR form of OpenLTH's cifar_vgg (Frankle et al.):
BatchNorm after every conv, global average pooling, one Linear(512, num_classes).
"""

from __future__ import annotations

from torch import nn

from pruneexp.models.base import MODELS, image_shape
from pruneexp.models.pooling import MaxPool2d

VGG_PLANS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """CIFAR VGG (Simonyan & Zisserman 2015; OpenLTH cifar_vgg): conv3x3-BN-ReLU stacks with
    5 max-pools, global average pool, Linear(512, num_classes). Needs spatial size >= 32."""

    def __init__(self, name: str, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        c, _, _ = image_shape(input_shape, name, min_size=32)
        layers: list[nn.Module] = []
        for item in VGG_PLANS[name]:
            if item == "M":
                layers.append(MaxPool2d(2))
            else:
                layers += [
                    nn.Conv2d(c, int(item), kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(int(item)),
                    nn.ReLU(),
                ]
                c = int(item)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


@MODELS.register("vgg11")
def vgg11(input_shape: tuple[int, ...], num_classes: int) -> VGG:
    """VGG-11 with BatchNorm, CIFAR form (Simonyan & Zisserman 2015; OpenLTH)."""
    return VGG("vgg11", input_shape, num_classes)


@MODELS.register("vgg16")
def vgg16(input_shape: tuple[int, ...], num_classes: int) -> VGG:
    """VGG-16 with BatchNorm, CIFAR form (Simonyan & Zisserman 2015; OpenLTH)."""
    return VGG("vgg16", input_shape, num_classes)
