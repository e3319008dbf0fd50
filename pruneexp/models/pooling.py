"""Max-pooling that runs PyTorch's fast CPU kernel.

PyTorch's CPU `max_pool2d` is about ten times slower on a contiguous NCHW tensor than on the same
tensor in channels-last memory (one thread, a 100x20x24x24 batch: 10.4 against 1.0 ms; LeNet-5-Caffe
with sparse variational dropout spent 12 % of its step there). `MaxPool2d` pools in channels-last
memory and hands back a contiguous NCHW tensor, so every layer after it sees what it saw before.
The maxima, the indices chosen (the first maximum of each window, ties included) and so the
gradients are the same bits as nn.MaxPool2d's (tests/test_models.py). Written by hand because torch
has no switch for it; on other devices, or on input already channels-last, it is nn.MaxPool2d.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d, computed in channels-last memory on the CPU (see the module)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        out = super().forward(x.contiguous(memory_format=torch.channels_last))
        return (tuple(o.contiguous() for o in out) if isinstance(out, tuple) else out.contiguous())


__all__ = ["MaxPool2d"]
