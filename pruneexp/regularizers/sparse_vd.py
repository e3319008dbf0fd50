"""`regularizer=sparse_vd`: sparse variational dropout (Molchanov, Ashukha & Vetrov 2017,
"Variational Dropout Sparsifies Deep Neural Networks").

Each weight of a prunable Linear or Conv2d layer is w = θ (1 + √α ε), ε ~ N(0, 1), in the additive-noise
reparameterisation w = θ + σ ε (σ² = α θ², σ² learned as log σ², log α = log σ² − log θ²). Training
samples the pre-activations with the local reparameterisation trick:

    b ~ N(x θᵀ + bias, x² (α θ²)ᵀ),   log α clipped to [−8, 8] (`log_alpha_clip`)

(a convolution: b ~ N(conv(x, θ) + bias, conv(x², α θ²)), the authors' `Conv2DVarDropOutARD`)

and the loss is the ELBO per training example: task loss + β_t Σ KL / N (N the training-set size,
β_t the KL weight: 0 until `kl_warmup_start`, then linearly to `strength` over `kl_warmup`; the
reference's `rw_linear` is 0 to epoch 5 and 1 from epoch 20). With `train_clip` (the reference's
LeNet setting) weights whose log α is at or above the threshold are already left out of the
training forward. The KL to the log-uniform prior is the paper's approximation (its eq. 14):

    −KL ≈ k₁ σ(k₂ + k₃ log α) − ½ log(1 + 1/α) − k₁,   k₁ = 0.63576, k₂ = 1.87320, k₃ = 1.48695.

Choices follow the authors' code (bayesgroup/variational-dropout-sparsifies-dnn, `DenseVarDropOutARD`:
variance exp(clip(log α)) θ², clip ±8, `train_clip=True`, threshold 3; its dense layer samples the
variance from the unclipped θ, its conv layer from the clipped one: `train_clip_variance=conv`). At the end weights with
log α >= `log_alpha_threshold` (3) are pruned: the layers fold back to plain
nn.Linear / nn.Conv2d with weight θ·[log α < 3] and a MaskSet, whose outputs equal the trained
layers' in deterministic mode (eval: the mean θ, pruned weights removed), so every measurement works
unchanged. Other prunable layer kinds (Conv1d, zero-padding given as 'same') are refused before
training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneexp.config import RegularizerConfig
from pruneexp.regularizers import REGULARIZERS
from pruneexp.regularizers.reparam import Wrapped, WrapsLayers
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
    # Which layers leave those weights out of the sampled variance as well (with train_clip): `all`,
    # or `conv` as in the authors' code, whose DenseVarDropOutARD samples the variance
    # x² (exp(log α) θ²)ᵀ from the unclipped θ (pruned weights still add noise in training) while
    # its Conv2DVarDropOutARD uses the clipped one.
    train_clip_variance: str = "all"
    init_log_sigma2: float = -10.0


def neg_kl_approx(log_alpha: Tensor) -> Tensor:
    """The paper's approximation of −KL(q(w | θ, αθ²) ‖ p(w) ∝ 1/|w|), per weight."""
    return K1 * torch.sigmoid(K2 + K3 * log_alpha) - 0.5 * F.softplus(-log_alpha) - K1


def neg_kl_sum(log_alpha: Tensor) -> Tensor:
    """Σ `neg_kl_approx` over every weight (differentiable in log α; see `_KLSum`)."""
    return -_KLSum.apply(log_alpha)


# The two functions below run on every weight at every training step, and elementwise passes over
# the weights, not the matmuls, were most of a step's cost (LeNet-300-100, batch 100, one CPU thread:
# 28 ms a step with autograd's ~70 passes). torch.compile would fuse them but costs more CPU time to
# compile than a CI run has; so their gradients are written out by hand (about half the passes),
# and tests/test_sparse_vd.py holds them to autograd's with gradcheck.
class _KLSum(torch.autograd.Function):
    """Σ KL ≈ Σ −(k₁ σ(k₂ + k₃ log α) − ½ softplus(−log α) − k₁), with
    ∂/∂ log α = −(k₁ k₃ s (1 − s) + ½ σ(−log α)), s = σ(k₂ + k₃ log α)."""

    @staticmethod
    def forward(ctx, log_alpha: Tensor) -> Tensor:
        s = torch.sigmoid(log_alpha * K3 + K2)
        q = torch.sigmoid(log_alpha)  # softplus(−x) = −log σ(x)
        ctx.save_for_backward(s, q)
        return K1 * log_alpha.numel() - K1 * s.sum() - 0.5 * torch.log(q).sum()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        s, q = ctx.saved_tensors
        return (s - s.square()).mul_(-K1 * K3).add_(q, alpha=0.5).sub_(0.5) * grad


class _Moments(torch.autograd.Function):
    """(W, V, log α) of a layer at one training step from θ and log σ²:

        log α = clip(log σ² − log(θ² + 1e-16), −c, c),  keep = log α < threshold,
        W = θ · keep (θ without `train_clip`),  V = exp(log α) · U²,  U = W (`clip_variance`) or θ

    (the mean and the variance weights of the local reparameterisation). With inner = (log α not
    clipped) and r = 2θ / (θ² + 1e-16), the gradients are

        ∂/∂ log σ² = inner · (g_V V + g_logα),
        ∂/∂θ = keep · g_W + keep_U · 2θ exp(log α) g_V − r · ∂/∂ log σ²   (keep_U = keep if U = W, else 1)."""

    @staticmethod
    def forward(ctx, theta: Tensor, log_sigma2: Tensor, clip: float, threshold: float, train_clip: bool,
                clip_variance: bool = True):
        sq = theta.square().add_(1e-16)
        raw = log_sigma2 - torch.log(sq)
        inner = (raw > -clip) & (raw < clip)
        log_alpha = raw.clamp_(-clip, clip)
        keep = log_alpha < threshold
        weight = torch.where(keep, theta, 0.0) if train_clip else theta
        e = log_alpha.exp()
        var = e * (weight if clip_variance else theta).square()
        ctx.save_for_backward(theta, sq, e, var, inner, keep if train_clip else None)
        ctx.clip_variance = clip_variance
        return weight, var, log_alpha

    @staticmethod
    def backward(ctx, g_weight, g_var, g_log_alpha):
        theta, sq, e, var, inner, keep = ctx.saved_tensors
        g_ls2 = torch.where(inner, g_var * var + g_log_alpha, 0.0)
        if keep is None:
            g_theta = torch.addcmul(g_weight, theta * e, g_var, value=2.0)
        elif ctx.clip_variance:
            g_theta = torch.where(keep, torch.addcmul(g_weight, theta * e, g_var, value=2.0), 0.0)
        else:
            g_theta = torch.where(keep, g_weight, 0.0).addcmul_(theta * e, g_var, value=2.0)
        g_theta.addcmul_(theta / sq, g_ls2, value=-2.0)
        return g_theta, g_ls2, None, None, None, None


class LayerSVD(Wrapped):
    """nn.Linear or nn.Conv2d with sparse variational dropout: `weight` is θ, `log_sigma2` its log
    variance. A convolution's pre-activations are sampled the same way (the authors'
    `Conv2DVarDropOutARD`): mean conv(x, θ) + bias, variance conv(x², α θ²)."""

    def __init__(self, layer: nn.Module, init_log_sigma2: float, threshold: float, clip: float = 8.0,
                 train_clip: bool = True, clip_variance: bool = True):
        super().__init__(layer)
        self.threshold, self.clip, self.train_clip, self.clip_variance = threshold, clip, train_clip, clip_variance
        self.log_sigma2 = nn.Parameter(torch.full_like(self.weight, init_log_sigma2))
        self._step_log_alpha: Tensor | None = None  # this training step's log α (shared by forward and KL)

    @property
    def log_alpha(self) -> Tensor:
        return torch.clamp(self.log_sigma2 - torch.log(self.weight.square() + 1e-16), -self.clip, self.clip)

    def keep(self) -> Tensor:
        return self.log_alpha < self.threshold

    def op(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        return F.linear(x, weight, bias) if self.conv is None else F.conv2d(x, weight, bias, **self.conv)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:  # deterministic: the mean, weights at or above the threshold removed
            return self.op(x, self.weight * self.keep(), self.bias)
        # log α once per step: the KL of this step (`kl`) reads it rather than computing it again
        weight, var_weight, self._step_log_alpha = _Moments.apply(self.weight, self.log_sigma2, self.clip, self.threshold,
                                                                 self.train_clip, self.clip_variance)
        mean = self.op(x, weight, self.bias)
        var = self.op(x.square(), var_weight)
        return mean + (var + 1e-8).sqrt() * torch.randn_like(mean)

    def kl(self) -> Tensor:
        """Σ KL over the weights, at the log α of the last training forward when there is one (then
        consumed), else at the current parameters."""
        log_alpha, self._step_log_alpha = self._step_log_alpha, None
        return _KLSum.apply(self.log_alpha if log_alpha is None else log_alpha)

    def fold(self) -> tuple[nn.Module, Tensor]:
        keep = self.keep().detach()
        return self.plain(self.weight * keep, self.bias), keep


@REGULARIZERS.register("sparse_vd", config=SparseVDConfig, granularities=("weight",), reparameterises=True)
class SparseVD(WrapsLayers):
    """The sparsifier of `schedule=regularized`: `wrap` before training, KL in `penalty`, `fold` after."""

    grouped = False
    elementwise = True
    method = "sparse_vd"
    kinds = (nn.Linear, nn.Conv2d)

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.warmup_start, self.warmup_steps, self.weight_now = 0, 1, 0.0

    def wrap(self, model: nn.Module, prunable: dict[str, nn.Parameter], n_train: int, steps_per_epoch: int = 1,
             frozen: tuple[str, ...] = ()) -> None:
        """Every prunable linear and convolutional layer, the classifier included, becomes a LayerSVD
        (`frozen` only keeps units whole, and sparse VD prunes weights)."""
        c = self.cfg
        self.wrap_layers(model, prunable, lambda layer: LayerSVD(
            layer, float(c.init_log_sigma2), float(c.log_alpha_threshold), float(c.log_alpha_clip), bool(c.train_clip),
            clip_variance=c.train_clip_variance == "all" or isinstance(layer, nn.Conv2d)))
        self.n_train = n_train
        self.warmup_start = to_steps(c.kl_warmup_start, steps_per_epoch)
        self.warmup_steps = max(1, to_steps(c.kl_warmup, steps_per_epoch))

    def kl_weight(self, step: int) -> float:
        """β_t = strength · clip((t − start) / warm-up, 0, 1)."""
        return self.strength * min(1.0, max(0.0, (step - self.warmup_start) / self.warmup_steps))

    def penalty(self, model: nn.Module, step: int) -> Tensor | None:
        self.weight_now = self.kl_weight(step)
        if self.weight_now == 0:
            for layer in self.layers.values():
                layer._step_log_alpha = None  # this step's log α is not needed
            return None
        return self.weight_now * sum(layer.kl() for layer in self.layers.values()) / self.n_train

    def log(self) -> dict[str, Any]:
        with torch.no_grad():  # log α once per layer here too: the KL and the weights kept read it
            alphas = [(layer, layer.log_alpha) for layer in self.layers.values()]
            kl = -float(sum(neg_kl_sum(la) for _, la in alphas))
            kept = sum(int((la < layer.threshold).sum()) for layer, la in alphas)
            total = sum(layer.weight.numel() for layer in self.layers.values())
        return dict(kl_weight=self.weight_now, kl=kl, vd_sparsity=1 - kept / max(1, total))
