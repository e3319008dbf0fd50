"""Training-batch augmentation on the device: per-sample random crop + horizontal flip.

Hand-written (like airbench's) instead of torchvision.transforms.v2 because v2's RandomCrop and
RandomHorizontalFlip, given a batched tensor, draw ONE crop/flip and apply it to the whole batch;
here every sample gets its own offsets and flip, in a few vectorised tensor ops, with all
randomness drawn from the torch.Generator the trainer passes (so a run is reproducible, and
rewindable from the generator's state).

Padding is REFLECT padding (as in airbench), not zero padding: the data are normalized once at
load time, so a zero pad would mean "the mean colour" rather than the black border of the classic
PIL pipeline; reflection avoids that ambiguity and introduces no artificial border.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, pad: int = 4) -> Tensor:
    """Deterministic part: crop each sample of `x` (N, C, H, W) at its own offset and flip it.

    The image is reflect-padded by `pad` on every side, then sample i is the H x W window whose
    top-left corner is (dy[i], dx[i]) in the padded image (offsets in [0, 2*pad]; offset `pad`
    means no shift), mirrored left-right where flip[i] is True.
    """
    if x.dim() != 4:
        raise ValueError(f"crop_flip expects (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    dy = dy.to(device=x.device, dtype=torch.long)
    dx = dx.to(device=x.device, dtype=torch.long)
    flip = flip.to(device=x.device, dtype=torch.bool)
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    else:
        padded = x
    wp = padded.shape[3]
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (N, W)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, wp))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4, flip_p: float = 0.5) -> Tensor:
    """Random per-sample crop (offsets uniform in [0, 2*pad]) and horizontal flip with p=flip_p.

    Draws exactly three tensors of N values from `generator` (dy, dx, flip), on the generator's
    device, so the augmentation is a pure function of (x, generator state).
    """
    n = x.shape[0]
    gdev = generator.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gdev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gdev)
    flip = torch.rand(n, generator=generator, device=gdev) < flip_p
    return crop_flip(x, dy, dx, flip, pad)


@dataclass(frozen=True)
class CropFlip:
    """The `DataSplits.augment` callable: `augment(batch, generator) -> batch` (same shape)."""

    pad: int = 4
    flip_p: float = 0.5

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return random_crop_flip(x, generator, self.pad, self.flip_p)
