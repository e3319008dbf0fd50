"""CIFAR ResNets (ResNet-20, ResNet-56): He et al. 2016, "Deep Residual Learning for Image
Recognition", Section 4.2, with 1x1 conv + BN projection shortcuts where the shape changes
(as in OpenLTH's cifar_resnet).
"""

from __future__ import annotations

from torch import nn

from pruneexp.models.base import MODELS, image_shape


class BasicBlock(nn.Module):
    """Residual basic block (He et al. 2016): conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU.

    The shortcut is the identity, or 1x1 conv + BN when stride or channels change.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = None
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + skip)


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2) (He et al. 2016): conv3x3(16)-BN-ReLU, 3 stages of n basic blocks with
    16/32/64 channels (stride 2 at stages 2 and 3), global average pool, Linear(64, num_classes)."""

    def __init__(self, depth: int, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        c, _, _ = image_shape(input_shape, f"resnet{depth}", min_size=1)
        self.conv1 = nn.Conv2d(c, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        blocks: list[nn.Module] = []
        in_ch = 16
        for stage, out_ch in enumerate([16, 32, 64]):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        return self.fc(self.flatten(self.pool(x)))


@MODELS.register("resnet20")
def resnet20(input_shape: tuple[int, ...], num_classes: int) -> CifarResNet:
    """ResNet-20 for CIFAR (He et al. 2016), ~0.27M parameters."""
    return CifarResNet(20, input_shape, num_classes)


@MODELS.register("resnet56")
def resnet56(input_shape: tuple[int, ...], num_classes: int) -> CifarResNet:
    """ResNet-56 for CIFAR (He et al. 2016), ~0.85M parameters."""
    return CifarResNet(56, input_shape, num_classes)
