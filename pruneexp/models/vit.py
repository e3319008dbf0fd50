"""A small Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"), sized for
MNIST / Fashion-MNIST, so every image experiment can also be run on attention:

    patches (p x p, non-overlapping) -> linear embedding + learned positions, a [CLS] token
    -> `depth` pre-LayerNorm encoder blocks (multi-head self-attention, GELU MLP)
    -> LayerNorm -> linear head on [CLS].

Built from torch's nn.TransformerEncoderLayer, whose attention projections (the packed
`in_proj_weight` and `out_proj`) and MLP layers are all prunable weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruneexp.config import ModelConfig
from pruneexp.errors import PruneexpError
from pruneexp.models.base import MODELS, image_shape


@dataclass
class ViTConfig(ModelConfig):
    patch: int = 7  # patch side in pixels (28 x 28 -> 16 patches of 7 x 7)
    dim: int = 64  # embedding width
    depth: int = 4  # encoder blocks
    heads: int = 4  # attention heads (dim must divide by heads)
    mlp_ratio: int = 2  # MLP hidden width = mlp_ratio * dim


class ViT(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, patch: int = 7, dim: int = 64, depth: int = 4,
                 heads: int = 4, mlp_ratio: int = 2):
        super().__init__()
        c, h, w = image_shape(input_shape, "vit", patch)
        if h % patch or w % patch or dim % heads:
            raise PruneexpError(f"Model 'vit' needs the image sides ({h} x {w}) to divide by model.patch={patch} and "
                                f"model.dim={dim} by model.heads={heads}.")
        self.patch = patch
        self.embed = nn.Linear(c * patch * patch, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + (h // patch) * (w // patch), dim) * 0.02)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(dim, heads, mlp_ratio * dim, dropout=0.0, activation="gelu",
                                                               batch_first=True, norm_first=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        p = self.patch
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // p) * (w // p), c * p * p)
        x = torch.cat([self.cls.expand(n, -1, -1), self.embed(x)], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


@MODELS.register("vit", config=ViTConfig)
def vit(input_shape: tuple[int, ...], num_classes: int, patch: int = 7, dim: int = 64, depth: int = 4, heads: int = 4,
        mlp_ratio: int = 2) -> ViT:
    """A small Vision Transformer (Dosovitskiy et al. 2021) for 28 x 28 images: 16 patches of 7 x 7."""
    return ViT(input_shape, num_classes, patch, dim, depth, heads, mlp_ratio)
