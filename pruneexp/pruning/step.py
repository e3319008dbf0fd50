"""The prune step, one plain function that schedules, sparsifiers, the oracle and notebooks share:

    scores = criterion(model, batches, loss)                 # score (+ the biases, prune.biases=true)
    masks  = select(scores, target, scope, granularity, ...) # select
    masks  = with_channel_footprint(model, masks)            # a unit's bias and BatchNorm go with it
    update(model, masks)                                     # only weight-correcting criteria (obs)
    masks.apply_(model)                                      # apply

It prints nothing and keeps no state: everything it reads comes in as arguments. In a run over
several processes (pruneexp.distributed) rank 0 alone takes the step, on the full scoring batches
(the data is resident in every rank), and broadcasts the masks and the scored weights: the masks
are those of 1 process, for every criterion, without a per-criterion reduction.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

from torch import Tensor, nn

from pruneexp import distributed
from pruneexp.pruning import biases as joint
from pruneexp.pruning.channels import with_channel_footprint
from pruneexp.pruning.criteria import ScoreContext, score
from pruneexp.pruning.groups import Granularity
from pruneexp.pruning.masks import MaskSet
from pruneexp.pruning.select import explicit_layer_targets, layer_targets, select

Batches = Callable[[], Iterator[tuple[Tensor, Tensor]]]


def prune_step(model: nn.Module, params: Mapping[str, nn.Parameter], masks: MaskSet, sparsity: float, *,
               criterion: Any, prune: Any, batches: Batches, loss_fn: Callable[[Tensor, Tensor], Tensor],
               seed: int = 0, frozen: tuple[str, ...] = (), layer_sparsity: Mapping[str, float] | None = None,
               forward: Callable[[Any], Any] | None = None) -> MaskSet:
    """Score the prunable `params` of `model` with the criterion of the `criterion` config node,
    select to `sparsity` (or to explicit per-layer targets under layerwise scope) with the selector
    settings of the `prune` node, extend channel masks to their footprint, apply the criterion's
    weight update if it has one, then the masks; return the new masks. Layers in `frozen` keep
    their masks and are not scored. With `prune.biases` each layer's bias is scored beside its
    weights and selected with them as one vector (`pruneexp.pruning.biases`). `forward` runs one
    scoring batch instead of `model(x)` (block-by-block post-training: one block on its cached inputs).

    Over several processes, rank 0 takes the step and the others receive its masks and the scored
    weights (the criterion's update, e.g. OBS, and the masks applied to them). Why not each rank
    scoring its shard and all-reducing statistics: scores are not sums over examples (Taylor squares
    each batch's sum, SNIP takes |mean gradient x w|, activation criteria rank per-sample
    statistics, SparseGPT solves sequentially), so shard-wise scores would not give the 1-process
    masks, and the scoring set (criterion.batches x batch_size) is small next to training."""
    def step() -> MaskSet:
        return _prune_step(model, params, masks, sparsity, criterion=criterion, prune=prune, batches=batches, loss_fn=loss_fn,
                           seed=seed, frozen=frozen, layer_sparsity=layer_sparsity, forward=forward)

    if not distributed.active():
        return step()
    taken: list[MaskSet] = []  # rank 0's own masks (the others get their state_dict)

    def lead() -> dict:
        taken.append(step())
        return taken[0].state_dict()

    state = distributed.on_leader(lead)
    distributed.broadcast_([w for n, w in params.items() if n not in frozen])
    if taken:  # rank 0
        return taken[0]
    new = MaskSet.from_state_dict(state).to(next(iter(masks.masks.values())).device)
    new.apply_(model, skip=frozen)  # biases and BatchNorm of a channel footprint
    return new


def _prune_step(model: nn.Module, params: Mapping[str, nn.Parameter], masks: MaskSet, sparsity: float, *,
                criterion: Any, prune: Any, batches: Batches, loss_fn: Callable[[Tensor, Tensor], Tensor],
                seed: int, frozen: tuple[str, ...], layer_sparsity: Mapping[str, float] | None,
                forward: Callable[[Any], Any] | None) -> MaskSet:
    """The prune step in one process (see `prune_step`)."""
    gran = Granularity.from_cfg(prune)
    scored_params = {n: w for n, w in params.items() if n not in frozen}
    if layer_sparsity is None and prune.get("layer_sparsity"):  # explicit final per-layer targets (oneshot)
        layer_sparsity = explicit_layer_targets(list(scored_params), sparsity, dict(prune.layer_sparsity))
    targets = None  # each layer's own sparsity, for criteria that choose their masks themselves (sparsegpt)
    if prune.scope == "layerwise":
        targets = ({n: float(layer_sparsity[n]) for n in scored_params} if layer_sparsity is not None
                   else layer_targets(list(scored_params), sparsity, dict(prune.layer_rates)))
    biases = joint.layer_biases(model, scored_params) if prune.get("biases", False) else {}
    named = dict(model.named_parameters())
    ctx = ScoreContext(model=model, params={**scored_params, **{b: named[b] for b in biases.values()}}, masks=masks,
                       batches=batches, loss_fn=loss_fn, cfg=criterion, seed=seed, granularity=gran, targets=targets, forward=forward)
    scored = score(criterion.name, ctx)
    pick = dict(scope=prune.scope, granularity=gran, layer_rates=dict(prune.layer_rates), group_reduce=prune.group_reduce,
                frozen=frozen, layer_sparsity=layer_sparsity)
    if biases:
        new = joint.split(select(joint.join(scored.scores, [w for w in masks.weights if w in scored.scores], biases), sparsity, joint.joint_masks(masks, biases), **pick),
                          masks, biases)
    else:
        new = select(scored.scores, sparsity, masks, **pick)
    if gran.kind == "channel":
        new = with_channel_footprint(model, new)
    if scored.update is not None:
        scored.update(model, new)
    new.apply_(model, skip=frozen)  # frozen layers kept their masks, applied before: block-by-block pruning stays O(blocks)
    return new
