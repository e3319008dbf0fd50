"""Channel-pruning cases shared by the shrink and latency tests (fixtures in conftest.py): small
models with trained-looking BatchNorm statistics and hand-made channel masks."""

import torch
from torch import nn

from pruneexp.models import create_model
from pruneexp.pruning.masks import MaskSet, prunable_weights


def _randomize_bn(model):
    """Trained-looking BatchNorm statistics, so a pruned channel's BN output is non-zero unless masked."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


def prune_out(masks: MaskSet, model: nn.Module, layer: str, idx: list[int], bn: str | None = None) -> None:
    """The channel-mask convention: weight rows, bias and the following BN's scale and shift False."""
    mod = model.get_submodule(layer)
    w = masks.masks.get(f"{layer}.weight", torch.ones_like(mod.weight, dtype=torch.bool)).clone()
    w[idx] = False
    masks.masks[f"{layer}.weight"] = w
    owners = [(layer, "bias")] if getattr(mod, "bias", None) is not None else []
    if bn is not None:
        owners += [(bn, "weight"), (bn, "bias")]
    for owner, p in owners:
        n = model.get_submodule(owner).weight.shape[0]
        m = masks.masks.get(f"{owner}.{p}", torch.ones(n, dtype=torch.bool)).clone()
        m[idx] = False
        masks.masks[f"{owner}.{p}"] = m


class ConvBN(nn.Module):
    """conv-BN-ReLU x2, max-pool, flatten (4x4 spatial: one channel feeds 16 linear inputs), linear."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.pool, self.flat, self.fc = nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12 * 16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(self.flat(self.pool(torch.relu(self.bn2(self.conv2(x))))))


def _resnet_masks(model):
    masks = MaskSet.dense(prunable_weights(model))
    for i in range(9):  # block-internal channels: conv1 -> bn1 -> conv2 (not residual-coupled)
        n = model.blocks[i].conv1.out_channels
        prune_out(masks, model, f"blocks.{i}.conv1", list(range(0, n, 2)), bn=f"blocks.{i}.bn1")
    # residual channel 3 of stage 1 pruned in every layer writing to the stage-1 sum: consistent
    prune_out(masks, model, "conv1", [3], bn="bn1")
    for i in range(3):
        prune_out(masks, model, f"blocks.{i}.conv2", [3], bn=f"blocks.{i}.bn2")
    return masks


def convbn_case() -> tuple[nn.Module, MaskSet]:
    """ConvBN with 3 of conv1's 8 and 4 of conv2's 12 channels pruned (with their BatchNorm)."""
    torch.manual_seed(0)
    model = _randomize_bn(ConvBN())
    masks = MaskSet.dense(prunable_weights(model))
    prune_out(masks, model, "conv1", [1, 4, 6], bn="bn1")
    prune_out(masks, model, "conv2", [0, 5, 7, 11], bn="bn2")
    return model, masks


def resnet20_case() -> tuple[nn.Module, MaskSet]:
    """ResNet-20 on 8 x 8 inputs with `_resnet_masks`."""
    torch.manual_seed(0)
    model = _randomize_bn(create_model("resnet20", (3, 8, 8), 10))
    return model, _resnet_masks(model)
