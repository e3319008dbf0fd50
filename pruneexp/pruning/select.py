"""The selector: turns scores into masks. It owns every thresholding decision.

    masks = select(scores, target, scope, granularity, rules, current_masks)

Rules common to every criterion (a criterion only scores, higher = more important to keep):
- already-pruned weights stay pruned (their score is -inf and they count towards the target);
- ties are broken deterministically: among equal scores the earlier index (in parameter order,
  then flattened order) is kept, via a stable sort;
- at least one unit is kept in every layer;
- `global` scope ranks all prunable weights together; `layerwise` prunes each layer to the target,
  scaled by its rate multiplier (Frankle & Carbin 2019 prune the output layer at half rate).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from pruneexp.errors import PruneexpError
from pruneexp.pruning.masks import MaskSet, match_layers

SCOPES = ("global", "layerwise")
GRANULARITIES = ("weight",)


def layer_targets(names: list[str], sparsity: float, layer_rates: Mapping[str, float]) -> dict[str, float]:
    """Per-layer sparsity target: `sparsity * multiplier`, where a layer's multiplier is set by the
    last matching rule in `layer_rates` (glob, `@first` or `@last`) and defaults to 1."""
    rate = dict.fromkeys(names, 1.0)
    for pattern, mult in layer_rates.items():
        hit = match_layers(names, pattern)
        if not hit:
            raise PruneexpError(f"prune.layer_rates pattern '{pattern}' matches no prunable layer; layers are: {', '.join(names)}.")
        for n in hit:
            rate[n] = float(mult)
    targets = {n: sparsity * rate[n] for n in names}
    bad = {n: t for n, t in targets.items() if not 0.0 <= t < 1.0}
    if bad:
        raise PruneexpError(f"prune.layer_rates push layers outside sparsity [0, 1): {bad}.")
    return targets


def n_to_keep(numel: int, sparsity: float) -> int:
    """Units kept when `sparsity` of `numel` is removed: numel - round(sparsity * numel), at least 1."""
    return max(1, numel - round(sparsity * numel))


def top_k_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of the k highest scores of a flat tensor; ties kept in index order (stable sort).
    Entries scored -inf (already pruned) are never kept."""
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[order[:k]] = True
    return keep & torch.isfinite(scores)


def select(
    scores: Mapping[str, Tensor],
    sparsity: float,
    current: MaskSet,
    *,
    scope: str = "global",
    granularity: str = "weight",
    layer_rates: Mapping[str, float] | None = None,
    layer_sparsity: Mapping[str, float] | None = None,
) -> MaskSet:
    """New masks that remove `sparsity` of the prunable weights (counted over all of them, already
    pruned ones included), choosing by score within `scope`. Under `layerwise` scope,
    `layer_sparsity` may give each layer's target explicitly (e.g. the per-layer compounding of
    iterative pruning, `imp_layer_sparsity`), in place of `sparsity` times the layer rates."""
    if not 0.0 <= sparsity < 1.0:
        raise PruneexpError(f"sparsity must be in [0, 1), got {sparsity}.")
    if scope not in SCOPES:
        raise PruneexpError(f"Unknown prune.scope '{scope}'; known: {', '.join(SCOPES)}.")
    if granularity not in GRANULARITIES:
        raise PruneexpError(f"Unknown prune.granularity '{granularity}'; known: {', '.join(GRANULARITIES)}.")
    names = list(current.weights)
    flat = {}
    for n in names:
        s = scores[n].detach().double().flatten()  # float64: a score must not tie by rounding
        flat[n] = torch.where(current[n].flatten().to(s.device), s, torch.tensor(float("-inf"), dtype=s.dtype, device=s.device))

    if scope == "global":
        if layer_rates:
            raise PruneexpError("prune.layer_rates needs prune.scope=layerwise: a global ranking has no per-layer rate.")
        everything = torch.cat([flat[n].cpu() for n in names])
        keep = top_k_mask(everything, n_to_keep(everything.numel(), sparsity))
        kept = dict(zip(names, keep.split([flat[n].numel() for n in names])))
    else:
        if layer_sparsity is not None:
            targets = {n: float(layer_sparsity[n]) for n in names}
        else:
            targets = layer_targets(names, sparsity, layer_rates or {})
        kept = {n: top_k_mask(flat[n].cpu(), n_to_keep(flat[n].numel(), targets[n])) for n in names}

    masks = dict(current.masks)
    for n in names:
        k = kept[n]
        if not k.any():  # never prune a layer to zero: keep its best-scored weight
            k = k.clone()
            k[int(torch.argmax(scores[n].detach().flatten().cpu()))] = True
        masks[n] = k.view_as(current[n]).to(current[n].device)
    return MaskSet(masks, current.weights)


def imp_layer_sparsity(current: MaskSet, rate: float, layer_rates: Mapping[str, float]) -> dict[str, float]:
    """Per-layer targets of one level of layerwise iterative pruning (Frankle & Carbin 2019): each
    layer removes `rate * multiplier` of its *remaining* weights, rounded to a whole count on this
    level's remaining count, so that after k levels a layer keeps about (1 - rate*multiplier)^k."""
    names = list(current.weights)
    rates = layer_targets(names, rate, layer_rates)
    out = {}
    for n in names:
        numel, kept = current[n].numel(), int(current[n].sum())
        out[n] = (numel - kept + round(rates[n] * kept)) / numel
    return out


def imp_sparsity(current: MaskSet, rate: float) -> float:
    """Total target of one level of global iterative pruning: `rate` of the remaining prunable
    weights (rounded to a whole count) removed on top of those already pruned."""
    total = sum(current[n].numel() for n in current.weights)
    kept = sum(int(current[n].sum()) for n in current.weights)
    return (total - kept + round(rate * kept)) / total
