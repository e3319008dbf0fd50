"""`regularizer=l0`: L0 regularisation with hard-concrete gates (Louizos, Welling & Kingma 2018,
"Learning Sparse Neural Networks through L0 Regularization").

Every prunable Linear layer gets gates z, on its weights, its output units or its input features
(`regularizer.granularity=weight|channel|input`), each z = min(1, max(0, s̄)) with

    u ~ U(0, 1),  s = σ((log u − log(1 − u) + log α) / β),  s̄ = s (ζ − γ) + γ,

β = 2/3, (γ, ζ) = (−0.1, 1.1): a stretched, clamped binary concrete that puts mass on exactly 0 and
1. The loss is the task loss + R with the expected L0 norm of the weights, each gate's probability
of being open times what it switches off (the paper's eq. 14 and the authors' `L0Dense._reg_w`
under `L0MLP.regularization`, whose prior precision N·wd re-weights an L2 penalty by the same
probability):

    R = Σ_j P(z_j ≠ 0) · Σ_{i ∈ gate j} (λ / N + ½ wd w_i²) + ½ wd Σ b²,
    P(z_j ≠ 0) = 1 − Q(s̄_j <= 0) = σ(log α_j − β log(−γ / ζ))

(λ = `strength`, N the training-set size, wd = `l2`; a weight gate covers one weight, an input gate
a column, a unit gate a row). Gates start closed with probability `init_drop` (the first layer's
`init_drop_first`: the authors' MLP uses 0.2 there, 0.5 elsewhere); log α is kept in
[log 0.01, log 100] after each step, as the authors' `constrain_parameters` does. One gate sample
per minibatch. `ema` = β > 0 keeps an exponential moving average of every parameter of the model
(gates, weights, biases), p̄ ← β p̄ + (1 − β) p after each step from p̄ = the initial parameters,
as the authors' MLP does (β = 0.999, their `update_ema`), and folds p̄ rather than the final
parameters, so the run's level is the averaged network (evaluations logged during training are of
the raw parameters). Off by default (β = 0: the final parameters), which leaves run hashes as before.
At test time ẑ = min(1, max(0, σ(log α)(ζ − γ) + γ)) (the paper's rule); the layers fold back to
nn.Linear with weights W·ẑ (and, for unit gates, biases b·ẑ) and a MaskSet that is False where
ẑ = 0, so the folded model equals the gated one in deterministic mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneexp.config import RegularizerConfig
from pruneexp.regularizers import REGULARIZERS
from pruneexp.pruning.masks import owner_name
from pruneexp.regularizers.reparam import Wrapped, WrapsLayers

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1
GATES = ("weight", "channel", "input")


@dataclass
class L0Config(RegularizerConfig):
    update: str = "subgradient"  # the expected L0 is part of the loss
    strength: float = 0.1  # λ (the penalty is λ · expected number of open weights / N)
    granularity: str = "weight"  # weight | channel | input: what a gate switches off
    init_drop: float = 0.5  # initial P(gate closed) (log α = log((1 - p) / p))
    init_drop_first: Optional[float] = None  # the first layer's initial P(gate closed); None: init_drop
    l2: float = 0.0  # wd: ½ wd w² per weight, re-weighted by its gate's P(open) (the authors' code: 5e-4)
    ema: float = 0.0  # β of an exponential moving average of the parameters, folded in at the end (0: off; authors: 0.999)


def prob_nonzero(log_alpha: Tensor) -> Tensor:
    """P(z != 0) = σ(log α − β log(−γ/ζ)) (the expected L0 norm per gate)."""
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


def sample_gates(log_alpha: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One hard-concrete sample per gate."""
    u = torch.rand(log_alpha.shape, generator=generator, device=log_alpha.device).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
    return torch.clamp(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def test_gates(log_alpha: Tensor) -> Tensor:
    """The paper's test-time gates ẑ = min(1, max(0, σ(log α)(ζ − γ) + γ))."""
    return torch.clamp(torch.sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


class LinearL0(Wrapped):
    def __init__(self, linear: nn.Linear, gates: str, init_drop: float):
        super().__init__(linear)
        self.gates = gates
        shape = {"weight": self.weight.shape, "channel": (linear.out_features,), "input": (linear.in_features,)}[gates]
        self.log_alpha = nn.Parameter(torch.full(shape, math.log((1 - init_drop) / init_drop)))

    def gate_sums(self, values: Tensor) -> Tensor:
        """Σ of `values` (shaped like the weight) over the weights of each gate."""
        if self.gates == "weight":
            return values
        return values.sum(1) if self.gates == "channel" else values.sum(0)

    def _effective(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.gates == "weight":
            return self.weight * z, self.bias
        if self.gates == "channel":
            return self.weight * z[:, None], None if self.bias is None else self.bias * z
        return self.weight * z[None, :], self.bias

    def gate_values(self) -> Tensor:
        return sample_gates(self.log_alpha) if self.training else test_gates(self.log_alpha)

    def forward(self, x: Tensor) -> Tensor:
        w, b = self._effective(self.gate_values())
        return F.linear(x, w, b)

    def fold(self) -> tuple[nn.Linear, Tensor]:
        z = test_gates(self.log_alpha).detach()
        out = self.plain(*self._effective(z))
        open_ = z > 0
        keep = {"weight": open_, "channel": open_[:, None], "input": open_[None, :]}[self.gates].expand_as(self.weight).clone()
        return out, keep


@REGULARIZERS.register("l0", config=L0Config, granularities=("weight", "channel"), reparameterises=True)
class L0(WrapsLayers):
    """The sparsifier of `schedule=regularized`: gates wrapped on before training, the expected-L0
    penalty in `penalty`, folded back with the test-time gate rule after."""

    grouped = False
    elementwise = True
    method = "l0"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.beta = float(cfg.get("ema", 0.0))
        self.average: list[Tensor] = []  # the parameter average p̄ (with `ema`), from `wrap` to `fold`

    def wrap(self, model: nn.Module, prunable: dict[str, nn.Parameter], n_train: int, steps_per_epoch: int = 1,
             frozen: tuple[str, ...] = ()) -> None:
        # the classifier's units are the classes: no unit gates there (`frozen`)
        c = self.cfg
        first = model.get_submodule(owner_name(next(iter(prunable)))) if prunable else None
        drop = lambda layer: float(c.init_drop if layer is not first or c.init_drop_first is None else c.init_drop_first)
        self.wrap_layers(model, prunable, lambda layer: LinearL0(layer, str(c.granularity), drop(layer)), frozen)
        self.n_train = n_train
        self.average = [p.detach().clone() for p in model.parameters()] if self.beta > 0 else []

    def expected_l0(self) -> Tensor:
        """The expected number of open weights, Σ_j P(z_j ≠ 0) · (weights gate j switches off)."""
        return sum((prob_nonzero(layer.log_alpha) * (layer.weight.numel() // layer.log_alpha.numel())).sum()
                   for layer in self.layers.values())

    def penalty(self, model: nn.Module, step: int) -> Tensor | None:
        """R = Σ_j P(z_j ≠ 0) Σ_{i ∈ j} (λ / N + ½ wd w_i²) + ½ wd Σ b² (see the module)."""
        wd, total = float(self.cfg.l2), 0.0
        for layer in self.layers.values():
            cost = self.strength * (layer.weight.numel() // layer.log_alpha.numel()) / self.n_train
            if wd:
                cost = cost + layer.gate_sums(0.5 * wd * layer.weight.square())
                if layer.bias is not None:
                    total = total + 0.5 * wd * layer.bias.square().sum()
            total = total + (prob_nonzero(layer.log_alpha) * cost).sum()
        return total

    def after_step(self, model: nn.Module, step: int, masks: Any, optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():  # the authors' constrain_parameters
            for layer in self.layers.values():
                layer.log_alpha.clamp_(math.log(1e-2), math.log(1e2))
            if self.average:  # the authors' update_ema, after their constrain_parameters
                torch._foreach_lerp_(self.average, [p.detach() for p in model.parameters()], 1.0 - self.beta)

    def fold(self, model: nn.Module, masks: Any) -> Any:
        """With `ema`: the averaged parameters replace the final ones, then the layers fold back."""
        if self.average:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in model.parameters()], self.average)
            self.average = []
        return super().fold(model, masks)

    def log(self) -> dict[str, Any]:
        with torch.no_grad():
            return dict(l0_strength=self.strength, expected_l0=float(self.expected_l0()))

    def state_dict(self) -> dict[str, Any]:
        return {"average": [a.detach().cpu() for a in self.average]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.average, [a.to(p.device) for a, p in zip(state["average"], self.average)])
