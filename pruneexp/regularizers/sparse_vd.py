"""`regularizer=sparse_vd`: sparse variational dropout (Molchanov, Ashukha & Vetrov 2017,
"Variational Dropout Sparsifies Deep Neural Networks").

Each weight of a prunable Linear layer is w = θ (1 + √α ε), ε ~ N(0, 1), in the additive-noise
reparameterisation w = θ + σ ε (σ² = α θ², σ² learned as log σ², log α = log σ² − log θ²). Training
samples the pre-activations with the local reparameterisation trick:

    b ~ N(x θᵀ + bias, x² (α θ²)ᵀ),   log α clipped to [−8, 8] (`log_alpha_clip`)

and the loss is the ELBO per training example: task loss + β_t Σ KL / N (N the training-set size,
β_t the KL weight: 0 until `kl_warmup_start`, then linearly to `strength` over `kl_warmup`; the
reference's `rw_linear` is 0 to epoch 5 and 1 from epoch 20). With `train_clip` (the reference's
LeNet setting) weights whose log α is at or above the threshold are already left out of the
training forward. The KL to the log-uniform prior is the paper's approximation (its eq. 14):

    −KL ≈ k₁ σ(k₂ + k₃ log α) − ½ log(1 + 1/α) − k₁,   k₁ = 0.63576, k₂ = 1.87320, k₃ = 1.48695.

Choices follow the authors' code (bayesgroup/variational-dropout-sparsifies-dnn, `DenseVarDropOutARD`:
variance exp(clip(log α)) θ², clip ±8, `train_clip=True`, threshold 3). At the end weights with
log α >= `log_alpha_threshold` (3) are pruned: the layers fold back to plain
nn.Linear with weight θ·[log α <= 3] and a MaskSet, whose outputs equal the trained layers' in
deterministic mode (eval: the mean θ, pruned weights removed), so every measurement works unchanged.
Linear layers only (LeNets, MLPs); a prunable convolution is refused before training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneexp.config import RegularizerConfig
from pruneexp.regularizers import REGULARIZERS
from pruneexp.regularizers.reparam import WrapsLinears
from pruneexp.train.durations import to_steps

K1, K2, K3 = 0.63576, 1.87320, 1.48695


@dataclass
class SparseVDConfig(RegularizerConfig):
    update: str = "subgradient"  # the KL is part of the loss (a proximal step does not apply)
    strength: float = 1.0  # the KL weight after warm-up (1: the ELBO)
    kl_warmup: str = "5ep"  # linear warm-up of the KL weight from 0 to `strength`, over this long
    kl_warmup_start: str = "0it"  # the KL weight is 0 until then (the reference: 5ep, warm-up 15ep)
    log_alpha_threshold: float = 3.0  # weights with log α at or above it are pruned at the end
    log_alpha_clip: float = 8.0  # log α clipped to [-clip, clip] (the reference: 8)
    train_clip: bool = True  # weights past the threshold are left out of the training forward too
    init_log_sigma2: float = -10.0


def neg_kl_approx(log_alpha: Tensor) -> Tensor:
    """The paper's approximation of −KL(q(w | θ, αθ²) ‖ p(w) ∝ 1/|w|), per weight."""
    return K1 * torch.sigmoid(K2 + K3 * log_alpha) - 0.5 * F.softplus(-log_alpha) - K1


class LinearSVD(nn.Module):
    """nn.Linear with sparse variational dropout: `weight` is θ, `log_sigma2` its log variance."""

    def __init__(self, linear: nn.Linear, init_log_sigma2: float, threshold: float, clip: float = 8.0,
                 train_clip: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.threshold = linear.in_features, linear.out_features, threshold
        self.clip, self.train_clip = clip, train_clip
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        self.log_sigma2 = nn.Parameter(torch.full_like(self.weight, init_log_sigma2))

    @property
    def log_alpha(self) -> Tensor:
        return torch.clamp(self.log_sigma2 - torch.log(self.weight.square() + 1e-16), -self.clip, self.clip)

    def keep(self) -> Tensor:
        return self.log_alpha < self.threshold

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:  # deterministic: the mean, weights at or above the threshold removed
            return F.linear(x, self.weight * self.keep(), self.bias)
        log_alpha = self.log_alpha
        weight = self.weight * (log_alpha < self.threshold) if self.train_clip else self.weight
        mean = F.linear(x, weight, self.bias)
        var = F.linear(x.square(), log_alpha.exp() * weight.square())
        return mean + (var + 1e-8).sqrt() * torch.randn_like(mean)

    def kl(self) -> Tensor:
        return -neg_kl_approx(self.log_alpha).sum()

    def fold(self) -> tuple[nn.Linear, Tensor]:
        keep = self.keep().detach()
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None).to(self.weight.device)
        with torch.no_grad():
            out.weight.copy_(self.weight * keep)
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out, keep


@REGULARIZERS.register("sparse_vd", config=SparseVDConfig, granularities=("weight",), reparameterises=True)
class SparseVD(WrapsLinears):
    """The sparsifier of `schedule=regularized`: `wrap` before training, KL in `penalty`, `fold` after."""

    grouped = False
    elementwise = True
    method = "sparse_vd"

    def __init__(self, cfg: Any):
        super().__init__()
        self.cfg = cfg
        self.strength = float(cfg.strength)
        self.n_train, self.warmup_start, self.warmup_steps, self.weight_now = 1, 0, 1, 0.0

    def wrap(self, model: nn.Module, prunable: dict[str, nn.Parameter], n_train: int, steps_per_epoch: int = 1,
             frozen: tuple[str, ...] = ()) -> None:
        """Every prunable linear layer, the classifier included, becomes a LinearSVD (`frozen` only
        keeps units whole, and sparse VD prunes weights)."""
        c = self.cfg
        self.wrap_linears(model, prunable, lambda layer: LinearSVD(layer, float(c.init_log_sigma2), float(c.log_alpha_threshold),
                                                                   float(c.log_alpha_clip), bool(c.train_clip)))
        self.n_train = n_train
        self.warmup_start = to_steps(c.kl_warmup_start, steps_per_epoch)
        self.warmup_steps = max(1, to_steps(c.kl_warmup, steps_per_epoch))

    def kl_weight(self, step: int) -> float:
        """β_t = strength · clip((t − start) / warm-up, 0, 1)."""
        return self.strength * min(1.0, max(0.0, (step - self.warmup_start) / self.warmup_steps))

    def penalty(self, model: nn.Module, step: int) -> Tensor | None:
        self.weight_now = self.kl_weight(step)
        if self.weight_now == 0:
            return None
        return self.weight_now * sum(layer.kl() for layer in self.layers.values()) / self.n_train

    def log(self) -> dict[str, Any]:
        with torch.no_grad():
            kl = float(sum(layer.kl() for layer in self.layers.values()))
            kept = sum(int(layer.keep().sum()) for layer in self.layers.values())
            total = sum(layer.weight.numel() for layer in self.layers.values())
        return dict(kl_weight=self.weight_now, kl=kl, vd_sparsity=1 - kept / max(1, total))
