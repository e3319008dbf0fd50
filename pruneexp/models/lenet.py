"""LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition").

- ``lenet5``: modern variant: ReLU and max-pooling instead of tanh and subsampling, padding 2 on
  the first conv so that 28x28 MNIST behaves like the paper's 32x32 input (6-16 convs, fc 120-84).
- ``lenet5_caffe``: LeNet-5 as Caffe's examples/mnist/lenet_train_test.prototxt defines it, the
  "LeNet-5" of Han et al. 2015 (Table 1) and "LeNet-5-Caffe" of Lee et al. 2019 (SNIP):
  conv 5x5 20 - maxpool 2 - conv 5x5 50 - maxpool 2 - fc 500 - ReLU - fc 10; no padding, and no
  nonlinearity after either conv (the prototxt has a ReLU only after ip1; SNIP's TensorFlow
  network, snip-public network.py, has the same). 431 080 parameters on 28x28 MNIST.
  `conv_relu=True` puts a ReLU after each conv, before its pooling: the LeNet-5 of Molchanov et
  al. 2017's sparse variational dropout (svdo-lasagne lenet5-ard.py, whose Conv2DVarDropOutARD
  layers have Lasagne's default `rectify`); the parameters are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruneexp.config import ModelConfig
from pruneexp.models.base import MODELS, image_shape
from pruneexp.models.pooling import MaxPool2d


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
            MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            MaxPool2d(2),
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


class LeNet5Caffe(nn.Module):
    """Caffe's LeNet (examples/mnist/lenet_train_test.prototxt): conv1 20 (5x5) - pool - conv2 50 (5x5)
    - pool - ip1 500 - ReLU - ip2. No ReLU after the convolutions, as in the prototxt (and SNIP's
    LeNet-5-Caffe), unless `conv_relu` (then conv - ReLU - pool, Molchanov et al. 2017's; the conv2
    and later modules move one index up in `features`). Needs an image input at least 16x16; the
    flatten size follows the input (800 on 28x28: 50 x 4 x 4)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, conv_relu: bool = False):
        super().__init__()
        c, h, w = image_shape(input_shape, "lenet5_caffe", min_size=16)
        act = (lambda: [nn.ReLU()]) if conv_relu else (lambda: [])
        self.features = nn.Sequential(
            nn.Conv2d(c, 20, kernel_size=5),
            *act(),
            MaxPool2d(2),
            nn.Conv2d(20, 50, kernel_size=5),
            *act(),
            MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.classifier = nn.Sequential(nn.Linear(flat, 500), nn.ReLU(), nn.Linear(500, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@dataclass
class LeNet5CaffeConfig(ModelConfig):
    conv_relu: bool = False  # a ReLU after each conv (Molchanov et al. 2017's LeNet-5); Caffe's has none


@MODELS.register("lenet5_caffe", config=LeNet5CaffeConfig)
def lenet5_caffe(input_shape: tuple[int, ...], num_classes: int, conv_relu: bool = False) -> LeNet5Caffe:
    """LeNet-5 as Caffe defines it (Han et al. 2015; Lee et al. 2019, SNIP); `conv_relu=True`: with
    a ReLU after each conv, as Molchanov et al. 2017's."""
    return LeNet5Caffe(input_shape, num_classes, conv_relu=conv_relu)
