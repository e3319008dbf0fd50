"""The selector: turns scores into masks. It owns every thresholding decision.

    masks = select(scores, target, scope, granularity, rules, current_masks)

Rules common to every criterion (a criterion only scores, higher = more important to keep):
- scores are element scores (the weight's shape) or group scores (`Granularity.group_shape`); element
  scores reduce to groups by `group_reduce` (sum | mean | l2);
- at `channel` and `block` granularity the target counts groups (units, blocks), at `weight` weights;
  `nm` keeps the N best of every M along the input dimension whatever the target;
- already-pruned weights stay pruned (their score is -inf and they count towards the target; a group
  is pruned when all its weights are);
- ties are broken deterministically: among equal scores the earlier index (in parameter order,
  then flattened order) is kept, via a stable sort;
- at least one unit is kept in every layer;
- `global` scope ranks all prunable groups together; `layerwise` prunes each layer to the target,
  scaled by its rate multiplier (Frankle & Carbin 2019 prune the output layer at half rate); `erk`
  gives each layer the Erdos-Renyi-Kernel density of Evci et al. 2020 (RigL), rescaled to hit the
  target with layers that would exceed density 1 kept dense; `row` prunes every output row of every
  layer to the target (the per-output comparison group of Wanda, Sun et al. 2023). LAMP (Lee et al. 2021) is the `lamp`
  criterion under `global` scope: its scores are already normalised per layer.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from pruneexp.errors import PruneexpError
from pruneexp.pruning.groups import GRANULARITIES, Granularity, nm_keep
from pruneexp.pruning.masks import MaskSet, match_layers

SCOPES = ("global", "layerwise", "erk", "row")
__all__ = ["GRANULARITIES", "SCOPES", "erk_densities", "explicit_layer_targets", "layer_targets", "n_to_keep", "select", "top_k_mask"]


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


def explicit_layer_targets(names: list[str], sparsity: float, layer_sparsity: Mapping[str, float],
                           fraction: float = 1.0) -> dict[str, float]:
    """Per-layer sparsity given explicitly (`prune.layer_sparsity`: glob, `@first` or `@last` ->
    the layer's final sparsity s_l; the last matching rule wins; layers not named get `sparsity`).
    At `fraction` f of the way through an iterative schedule (level k of n: f = k/n) a layer's
    density is (1 - s_l)^f, the same share of its remaining weights removed at every level, so
    that the last level lands on s_l exactly."""
    target = dict.fromkeys(names, float(sparsity))
    for pattern, s in layer_sparsity.items():
        hit = match_layers(names, pattern)
        if not hit:
            raise PruneexpError(f"prune.layer_sparsity pattern '{pattern}' matches no prunable layer; layers are: {', '.join(names)}.")
        if not 0.0 <= float(s) < 1.0:
            raise PruneexpError(f"prune.layer_sparsity['{pattern}']={s} is outside [0, 1).")
        for n in hit:
            target[n] = float(s)
    return {n: 1.0 - (1.0 - s) ** fraction for n, s in target.items()}


def n_to_keep(numel: int, sparsity: float) -> int:
    """Units kept when `sparsity` of `numel` is removed: numel - round(sparsity * numel), at least 1."""
    return max(1, numel - round(sparsity * numel))


def top_k_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean mask (the scores' shape) of the k highest scores, in flattened order, exactly what
    the first k of a stable descending sort keep (`torch.sort(descending=True, stable=True)`),
    finite entries only:
    - ties are kept in index order;
    - -inf (an already-pruned weight) sorts last and is never kept;
    - NaN and +inf sort first (torch's order) and take their places among the k, but are never kept
      (the selector refuses them on live weights before this; `check_finite`).
    By selection rather than sorting, among the finite scores alone: with m = k - #{NaN, +inf} the
    places left and v the m-th largest finite score, keep every finite score > v and the first
    m - #{> v} of those equal to v. v comes from torch.topk (introselect, a heap for small k:
    linear on average, O(n log n) at worst), which stays fast on long runs of equal values and on
    sorted input. numpy's introselect fell to its slow fallback on such runs (issue 28: 50 ms
    instead of 6.5 on 266 200 scores, 200 000 of them -inf, as in gmp's later updates and every
    dynamic-sparse-training update), torch.kthvalue's quickselect to quadratic time on descending
    input (1.9 s). scripts/bench_select.py times it."""
    flat = scores.detach().reshape(-1).cpu()
    if flat.dtype not in (torch.float32, torch.float64):  # half, bfloat16, integers: float64 keeps their order and ties
        flat = flat.double()
    x = flat.numpy()
    n = x.size
    finite = np.isfinite(x)
    idx = None if finite.all() else np.flatnonzero(finite)  # finite positions, in index order
    vals = x if idx is None else x[idx]
    m = min(k - (n - vals.size - int(np.count_nonzero(np.isneginf(x)))), vals.size)  # NaN and +inf take their places first
    if m >= vals.size:
        kept = np.ones(vals.size, dtype=bool)
    elif m <= 0:
        kept = np.zeros(vals.size, dtype=bool)
    else:
        v = _kth_largest(vals, m)
        kept = vals > v
        kept[np.flatnonzero(vals == v)[: m - int(np.count_nonzero(kept))]] = True
    if idx is not None:
        keep = np.zeros(n, dtype=bool)
        keep[idx] = kept
        kept = keep
    return torch.from_numpy(kept).view(scores.shape).to(scores.device)


def _kth_largest(vals: np.ndarray, m: int) -> float:
    """The m-th largest of `vals` (finite, 0 < m < len(vals)), by torch.topk of the smaller side."""
    t = torch.from_numpy(vals)
    if 2 * m <= t.numel():
        return float(t.topk(m, sorted=False).values.min())
    return float(t.topk(t.numel() - m + 1, largest=False, sorted=False).values.max())


ROW_CHUNK = 1 << 22  # scores sorted at once by top_k_rows (32 MiB of float64): memory bounded on any layer width


def top_k_rows(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of the k highest scores in every row of a 2-D tensor (ties kept in index order;
    -inf, i.e. already pruned, never kept): the per-output-row selection of Wanda (Sun et al. 2023).
    Rows are sorted a chunk at a time (ROW_CHUNK scores), so a 14 336 x 4 096 MLP projection needs
    a few tens of MiB beside its scores, not the several GiB of sorting it whole."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    step = max(1, ROW_CHUNK // max(1, scores.shape[1]))
    for r in range(0, scores.shape[0], step):
        values, order = torch.sort(scores[r:r + step], dim=1, descending=True, stable=True)
        # a row with fewer than k live scores keeps only those: -inf sorts last, so it is among the
        # first k only then (read from the sorted values, not a second pass over the scores)
        keep[r:r + step].scatter_(1, order[:, :k], torch.isfinite(values[:, :k]))
    return keep


def erk_densities(shapes: Mapping[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Erdos-Renyi-Kernel layer densities (Evci et al. 2020, "Rigging the Lottery", Sec. 3(1)):
    d_l = min(1, eps * sum(shape_l) / prod(shape_l)) (n_out + n_in [+ k_h + k_w] over their product),
    with eps chosen so that sum_l d_l N_l = density * sum_l N_l; a layer whose d_l would exceed 1 is
    made dense and eps is solved again for the rest (the RigL reference implementation's loop)."""
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / numel[n] for n, s in shapes.items()}
    budget = density * sum(numel.values())
    dense: set[str] = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        if not rest:
            return dict.fromkeys(shapes, 1.0)
        eps = (budget - sum(numel[n] for n in dense)) / sum(raw[n] * numel[n] for n in rest)
        over = [n for n in rest if eps * raw[n] > 1.0]
        if not over:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense.add(max(over, key=lambda n: raw[n]))


def _group_scores(score: Tensor, shape: torch.Size, gran: Granularity, how: str, name: str) -> Tensor:
    """Group scores of one layer: given directly by the criterion, or reduced from element scores."""
    score = score.detach().double().cpu()  # float64: a score must not tie by rounding
    gshape = gran.group_shape(shape)
    if tuple(score.shape) == gshape:
        return score
    if tuple(score.shape) == tuple(shape):
        return gran.reduce(score, how)
    raise PruneexpError(f"score of {name} has shape {tuple(score.shape)}; expected {tuple(shape)} or {gshape}.")


def select(
    scores: Mapping[str, Tensor],
    sparsity: float,
    current: MaskSet,
    *,
    scope: str = "global",
    granularity: str | Granularity = "weight",
    layer_rates: Mapping[str, float] | None = None,
    group_reduce: str = "sum",
    frozen: tuple[str, ...] = (),
    layer_sparsity: Mapping[str, float] | None = None,
) -> MaskSet:
    """New masks that remove `sparsity` of the prunable groups (counted over all of them, already
    pruned ones included), choosing by score within `scope`. Layers in `frozen` keep their masks.
    Under `layerwise` scope, `layer_sparsity` may give each layer's target explicitly (e.g. the
    per-layer compounding of iterative pruning, `imp_layer_sparsity`), in place of `sparsity` times
    the layer rates."""
    gran = granularity if isinstance(granularity, Granularity) else Granularity(granularity)
    if not 0.0 <= sparsity < 1.0:
        raise PruneexpError(f"sparsity must be in [0, 1), got {sparsity}.")
    if scope not in SCOPES:
        raise PruneexpError(f"Unknown prune.scope '{scope}'; known: {', '.join(SCOPES)}.")
    if gran.kind not in GRANULARITIES:
        raise PruneexpError(f"Unknown prune.granularity '{gran.kind}'; known: {', '.join(GRANULARITIES)}.")
    if layer_rates and scope != "layerwise":
        raise PruneexpError(f"prune.layer_rates needs prune.scope=layerwise: a {scope} allocation has no per-layer rate.")
    if scope == "row" and gran.kind != "weight":
        raise PruneexpError(f"prune.scope=row compares weights within each output row; it needs prune.granularity=weight, not {gran.kind}.")
    names = [n for n in current.weights if n not in frozen]
    shapes = {n: current[n].shape for n in names}
    masks = dict(current.masks)
    check_finite(scores, current, names)

    if gran.kind == "nm":
        for n in names:
            masks[n] = nm_keep(scores[n].detach().cpu(), current[n].cpu(), gran.n, gran.m, n).to(current[n].device)
        return MaskSet(masks, current.weights)

    flat, alive = {}, {}
    for n in names:
        alive[n] = alive_groups(current[n], gran)
        s = _group_scores(scores[n], shapes[n], gran, group_reduce, n).flatten()
        flat[n] = torch.where(alive[n], s, torch.tensor(float("-inf"), dtype=s.dtype))

    if scope == "global":
        everything = torch.cat([flat[n] for n in names])
        keep = top_k_mask(everything, n_to_keep(everything.numel(), sparsity))
        kept = dict(zip(names, keep.split([flat[n].numel() for n in names])))
    elif scope == "row":
        kept = {n: top_k_rows(flat[n].view(shapes[n][0], -1), n_to_keep(flat[n].numel() // shapes[n][0], sparsity)).flatten()
                for n in names}
    else:
        if layer_sparsity is not None:
            targets = {n: float(layer_sparsity[n]) for n in names}
        elif scope == "erk":
            dens = erk_densities({n: tuple(shapes[n]) for n in names}, 1.0 - sparsity)
            targets = {n: 1.0 - d for n, d in dens.items()}
        else:
            targets = layer_targets(names, sparsity, layer_rates or {})
        kept = {n: top_k_mask(flat[n], n_to_keep(flat[n].numel(), targets[n])) for n in names}

    if scope == "global":
        _check_kept("all layers", sum(int(kept[n].sum()) for n in names), torch.cat([flat[n] for n in names]), sparsity, len(names))
    elif scope == "row":
        for n in names:
            rows = alive[n].view(shapes[n][0], -1)  # a score is finite exactly where its weight is alive (check_finite)
            want = int(rows.sum(1).clamp(max=n_to_keep(rows.shape[1], sparsity)).sum())
            if int(kept[n].sum()) != want:
                raise PruneexpError(f"The selector kept {int(kept[n].sum())} weights of {n} where sparsity {sparsity:g} per "
                                    f"row asks for {want}; refusing to record a sparsity other than the one asked for.")
    else:
        for n in names:
            _check_kept(n, int(kept[n].sum()), flat[n], targets[n], 1)
    for n in names:
        k = kept[n]
        if not k.any():  # never prune a layer to zero: keep its best-scored live group
            k = k.clone()
            k[int(torch.argmax(flat[n]))] = True
        elem = gran.expand(k.view(gran.group_shape(shapes[n])), shapes[n]).to(current[n].device)
        masks[n] = elem & current[n]
    return MaskSet(masks, current.weights)


def check_finite(scores: Mapping[str, Tensor], current: MaskSet, names: list[str]) -> None:
    """Refuse scores that are NaN or infinite on a weight still alive: they come from a network
    that diverged (or a criterion that broke), and thresholding them would prune at random and
    miss the asked sparsity. Already-pruned weights may score anything (the selector ignores them)."""
    for n in names:
        s = scores[n].detach()
        if bool(torch.isfinite(s.sum())):  # a finite sum has no NaN or infinite term: the common case, in one pass
            continue
        bad = ~torch.isfinite(s)
        if s.shape == current[n].shape:
            bad = bad & current[n].to(bad.device)
        if bool(bad.any()):
            nan = int(torch.isnan(s).sum())
            raise PruneexpError(f"The criterion's scores of {n} are not finite ({nan} NaN, {int(bad.sum()) - nan} infinite "
                                "on live weights): the network has probably diverged (lower train.lr). Nothing was pruned.")


def _check_kept(where: str, kept: int, flat: Tensor, sparsity: float, n_layers: int) -> None:
    """The selector keeps exactly the count the target asks (or every live group, if fewer are
    alive), plus at most one group per layer for the keep-one rule; anything else is a bug that
    would record a sparsity other than the one asked for, so it stops the run."""
    alive = int(np.count_nonzero(np.isfinite(flat.numpy())))  # flat: float64 on the CPU (_group_scores)
    want = min(n_to_keep(flat.numel(), sparsity), alive)
    if not want <= kept <= want + n_layers:
        raise PruneexpError(f"The selector kept {kept} of {flat.numel()} groups in {where} where sparsity {sparsity:g} "
                            f"asks for {want}; refusing to record a sparsity other than the one asked for.")


def alive_groups(mask: Tensor, gran: Granularity) -> Tensor:
    """Flat bool over the groups of `gran` in a weight's mask: a group lives while any weight does
    (a weight's group is itself: its mask, flattened; read it, never write it)."""
    if gran.kind in ("weight", "nm"):
        return mask.cpu().flatten()
    return gran.reduce(mask.double().cpu(), "sum").flatten() > 0


def imp_layer_sparsity(current: MaskSet, rate: float, layer_rates: Mapping[str, float],
                       granularity: Granularity = Granularity()) -> dict[str, float]:
    """Per-layer targets of one level of layerwise iterative pruning (Frankle & Carbin 2019): each
    layer removes `rate * multiplier` of its *remaining* groups (weights, units or blocks, as the
    selector counts them), rounded to a whole count, so that after k levels a layer keeps about
    (1 - rate*multiplier)^k:  s_l = (n_l - kept_l + round(r_l * kept_l)) / n_l."""
    names = list(current.weights)
    rates = layer_targets(names, rate, layer_rates)
    out = {}
    for n in names:
        alive = alive_groups(current[n], granularity)
        numel, kept = alive.numel(), int(alive.sum())
        out[n] = (numel - kept + round(rates[n] * kept)) / numel
    return out


def imp_sparsity(current: MaskSet, rate: float, granularity: Granularity = Granularity(), exclude: tuple[str, ...] = ()) -> float:
    """Total target of one level of global iterative pruning: `rate` of the remaining prunable
    groups (rounded to a whole count) removed on top of those already pruned, counted over the
    layers the selector ranks together (all but `exclude`, e.g. the classifier under channel pruning):
    s = (n - kept + round(r * kept)) / n."""
    alive = [alive_groups(current[n], granularity) for n in current.weights if n not in exclude]
    total, kept = sum(a.numel() for a in alive), sum(int(a.sum()) for a in alive)
    return (total - kept + round(rate * kept)) / total
