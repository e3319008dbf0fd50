"""What every penalty shares: its config schema, the groups it acts on, its proximal operators,
and the sparsifier that puts it into the training loop.

Notation: a prunable weight W of a layer; at `channel` granularity its groups are its output units
w_g = (W[g, ...], b[g]) (the unit's incoming weights and its bias, the unit's whole footprint, so a
group at zero is a unit that outputs exactly zero), p_g the number of weights in the group. The
classifier's units (the output layer at channel granularity) are never grouped: they are the classes.

Penalties (λ = `strength`, α = `l1_ratio`):

    l1                  λ Σ|w|
    l2                  λ/2 Σ w²
    elastic_net         λ (α Σ|w| + (1-α)/2 Σ w²)                    (Zou & Hastie 2005)
    group_lasso         λ Σ_g √p_g ‖w_g‖₂                             (Yuan & Lin 2006; Scardapane et al. 2017;
                                                                       Wen et al. 2016)
    sparse_group_lasso  λ (α Σ|w| + (1-α) Σ_g √p_g ‖w_g‖₂)          (Simon et al. 2013; Scardapane et al. 2017)

Their proximal operators for a step size η (the optimizer's current learning rate):

    soft threshold       S_t(w) = sign(w) max(|w| - t, 0)                        (l1: t = ηλ)
    shrink               w / (1 + ηλ)                                            (l2)
    group soft threshold w_g max(0, 1 - t √p_g / ‖w_g‖₂)                         (group lasso: t = ηλ)
    elastic net          S_{ηλα}(w) / (1 + ηλ(1-α))
    sparse group lasso   group soft threshold (t = ηλ(1-α)) of S_{ηλα}(w)       (exact: Simon et al. 2013)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruneexp.config import RegularizerConfig
from pruneexp.pruning.masks import MaskSet, bias_name
from pruneexp.train.sparsifier import Sparsifier

UPDATES = ("subgradient", "proximal")


@dataclass
class MixedConfig(RegularizerConfig):
    l1_ratio: float = 0.5  # α: the L1 share of elastic net and sparse group lasso


# ---- proximal operators (pure functions on tensors) ------------------------------------------------
def soft_threshold(w: Tensor, t: float) -> Tensor:
    """S_t(w) = sign(w) max(|w| - t, 0), elementwise."""
    return torch.sign(w) * torch.clamp(w.abs() - t, min=0.0)


def group_soft_threshold(rows: Tensor, t: float, sizes: Tensor | float | None = None) -> Tensor:
    """Rows (one group per row) w_g max(0, 1 - t √p_g / ‖w_g‖₂), √p_g = √(row length) unless `sizes`."""
    p = float(rows.shape[1]) if sizes is None else sizes
    scale_t = t * (torch.as_tensor(p, dtype=rows.dtype, device=rows.device).sqrt())
    norms = rows.norm(dim=1)
    factor = torch.clamp(1.0 - scale_t / norms.clamp_min(torch.finfo(rows.dtype).tiny), min=0.0)
    return rows * factor.unsqueeze(1)


# ---- groups -----------------------------------------------------------------------------------------
@dataclass
class Group:
    """One prunable weight and how the penalty sees it: `grouped` (its output units are groups, with
    `bias` in them) or elementwise only."""

    name: str
    weight: nn.Parameter
    bias: nn.Parameter | None
    grouped: bool

    def rows(self) -> Tensor:
        """[units, p_g]: each unit's incoming weights and bias (a view-free concatenation)."""
        w = self.weight.reshape(self.weight.shape[0], -1)
        return w if self.bias is None else torch.cat([w, self.bias.unsqueeze(1)], dim=1)

    def write_rows(self, rows: Tensor) -> None:
        n = self.weight[0].numel()
        self.weight.copy_(rows[:, :n].reshape(self.weight.shape))
        if self.bias is not None:
            self.bias.copy_(rows[:, n])


def make_groups(model: nn.Module, prunable: dict[str, nn.Parameter], grouped: bool, frozen: tuple[str, ...] = ()) -> list[Group]:
    params = dict(model.named_parameters())
    return [Group(n, w, params.get(bias_name(n)) if grouped and n not in frozen else None, grouped and n not in frozen)
            for n, w in prunable.items()]


class Penalty:
    """One method: its value R(w) over the groups (differentiable, for `update=subgradient`) and its
    proximal step (in place, for `update=proximal`). λ and α come from the config."""

    grouped = False  # whether it has group terms (needs units: prune.granularity=channel)
    elementwise = True  # whether it has elementwise terms (single weights thresholded at the end)

    def __init__(self, cfg: Any):
        self.strength = float(cfg.strength)
        self.l1_ratio = float(cfg.get("l1_ratio", 1.0))

    def value(self, groups: list[Group]) -> Tensor:
        raise NotImplementedError

    def prox_(self, groups: list[Group], step_size: float) -> None:
        raise NotImplementedError

    # helpers
    @staticmethod
    def l1(groups: list[Group]) -> Tensor:
        return sum(g.weight.abs().sum() for g in groups)

    @staticmethod
    def sq(groups: list[Group]) -> Tensor:
        return sum(g.weight.square().sum() for g in groups)

    @staticmethod
    def group_norms(groups: list[Group]) -> Tensor:
        return sum(math.sqrt(g.rows().shape[1]) * g.rows().norm(dim=1).sum() for g in groups if g.grouped)


class PenaltySparsifier(Sparsifier):
    """A penalty in the training loop's hook: added to the loss (subgradient) or a proximal step after
    each optimizer step at the optimizer's current learning rate (proximal). Logs λ and the
    penalty's value at each evaluation (train_log.csv: reg_strength, reg_penalty)."""

    def __init__(self, penalty: Penalty, groups: list[Group], update: str):
        self.penalty_fn, self.groups, self.update = penalty, groups, update

    def penalty(self, model: nn.Module, step: int) -> Tensor | None:
        if self.update != "subgradient" or self.penalty_fn.strength == 0:
            return None
        return self.penalty_fn.value(self.groups)

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int, masks: MaskSet, optimizer: torch.optim.Optimizer) -> None:
        if self.update == "proximal" and self.penalty_fn.strength > 0:
            self.penalty_fn.prox_(self.groups, float(optimizer.param_groups[0]["lr"]))

    def log(self) -> dict[str, Any]:
        with torch.no_grad():
            value = self.penalty_fn.value(self.groups)
        return dict(reg_strength=self.penalty_fn.strength, reg_penalty=float(value))

    @torch.no_grad()
    def threshold_masks(self, masks: MaskSet, threshold: float) -> MaskSet:
        """`masks` with weights |w| <= threshold removed (elementwise penalties) or units with
        ‖w_g‖₂ <= threshold removed (grouped penalties; elementwise ones inside kept units too)."""
        new = masks.clone()
        for g in self.groups:
            keep = masks[g.name].clone()
            if g.grouped:
                alive = g.rows().norm(dim=1) > threshold
                keep &= alive.reshape(-1, *([1] * (g.weight.dim() - 1))).expand_as(keep)
            if self.penalty_fn.elementwise:
                keep &= g.weight.abs() > threshold
            new.set_(g.name, keep)
        return new
