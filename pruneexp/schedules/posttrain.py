"""Post-training pruning, layer by layer, with a little calibration data and no retraining: the
sequential protocol of SparseGPT (Frantar & Alistarh 2023) and Wanda (Sun et al. 2023).

    dense = train (or load: schedule.checkpoint, or the weights as built with train_dense=false)
    for each block of layers, in forward order (a transformer block: every prunable weight under
    the same `<name>.<index>.` prefix; a layer outside any block is a block of its own):
        prune_step(block's layers only, the others frozen)   # criterion, selector, update, masks
        -- each block sees the outputs of the pruned blocks before it; within a block every layer
           sees the block's dense input, as in both reference codes
    optional short fine-tune (schedule.finetune.duration, default 0it: none)

How a block's calibration inputs are reached (the same inputs, so the same masks, either way):
- criteria that read only the weights (magnitude, random): each block is pruned in turn with
  nothing run at all (no input of a block changes their scores).
- blocks engine (`pruneexp.pruning.blocks`, the reference codes' loop), for criteria that read
  layer inputs (Wanda, SparseGPT, OBS): the inputs of the first block are
  recorded once, each block runs on its cached inputs with the statistics gathered, is pruned, and
  its outputs become the next block's inputs: O(blocks) block forwards in all. Layers outside the
  model's block list (an untied LM head) are pruned after the blocks through the whole model.
  `schedule.offload` (always | auto: on CUDA when the model takes over half of the device's memory
  | never) keeps the model on the CPU while it is pruned and brings one block at a time to the
  device; the model returns to the device to be evaluated.
- whole-model engine, for criteria that need the model's outputs or loss (Taylor, SNIP, ...): the
  calibration batches run through the whole model once for every block.

The calibration set is the criterion's scoring batches: criterion.batches x criterion.batch_size
sequences of the training split, the same for every block. Per-layer targets: under
prune.scope=layerwise every layer gets `sparsity` (times its layer rate); under `row` every output
row (Wanda); under `global` each block is pruned to `sparsity` over its own layers.
With schedule.heads > 0 the pruned level removes that fraction of all attention heads instead
(Michel et al. 2019's importance, or random heads with schedule.head_score=random).
Levels: 0 dense, 1 pruned, 2 fine-tuned (only when schedule.finetune.duration is not zero).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from pruneexp.config import FinetuneConfig, ScheduleConfig
from pruneexp.errors import PruneexpError
from pruneexp.pruning.blocks import block_forward, block_list, block_of, first_block_inputs, next_inputs, peak_memory
from pruneexp.pruning.criteria import CRITERIA
from pruneexp.pruning.heads import attention_layers, head_importance, head_masks, select_heads
from pruneexp.pruning.masks import MaskSet
from pruneexp.pruning.select import layer_targets
from pruneexp.pruning.step import prune_step
from pruneexp.schedules import SCHEDULES
from pruneexp.schedules.context import Level, RunContext
from pruneexp.train.durations import to_steps


@dataclass
class PosttrainConfig(ScheduleConfig):
    # optional short fine-tune after pruning (0it: none, the post-training protocol)
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(duration="0it", lr=1e-4, lr_schedule="constant"))
    sequential: bool = True  # false: every layer scored at once on the dense model (no pruned-input feeding)
    checkpoint: str = ""  # a state dict (torch.save of model.state_dict()) to start from instead of training
    train_dense: bool = True  # false: the weights as built are the dense network (e.g. model=hf from disk)
    # > 0: remove this fraction of all attention heads instead of pruning weights (pruneexp.pruning.heads)
    heads: float = 0.0
    head_score: str = "michel"  # michel: Michel et al. 2019's importance on the calibration batches | random
    offload: str = "auto"  # always | auto | never: keep the model on the CPU while pruning, one block at a time on the device


def check(cfg: Any) -> None:
    s = cfg.schedule
    if not 0.0 <= s.heads < 1.0 or s.head_score not in ("michel", "random"):
        raise PruneexpError(f"schedule.heads must be in [0, 1) and schedule.head_score michel or random (got {s.heads}, {s.head_score}).")
    if s.offload not in OFFLOAD:
        raise PruneexpError(f"schedule.offload={s.offload!r} is not one of {', '.join(OFFLOAD)}.")
    if s.checkpoint and not Path(s.checkpoint).expanduser().is_file():
        raise PruneexpError(f"schedule.checkpoint={s.checkpoint} is not a file.")


_INDEX = re.compile(r"^(.*?\.\d+)\.")
OFFLOAD = ("always", "auto", "never")


def sequential_blocks(names: list[str]) -> list[list[str]]:
    """Prunable weight names grouped by block, in forward (parameter) order: the prefix up to the
    first numeric component ("blocks.3.attn.c_attn.weight" -> "blocks.3"); a name without one is
    its own block."""
    blocks: dict[str, list[str]] = {}
    for n in names:
        m = _INDEX.match(n)
        blocks.setdefault(m.group(1) if m else n, []).append(n)
    return list(blocks.values())


def prune_sequential(ctx: RunContext, model: nn.Module, masks: MaskSet, sparsity: float, engine: str = "auto") -> MaskSet:
    """Prune block after block (module docstring), every block scored on the calibration batches
    through the already-pruned blocks before it. `engine`: blocks | model | auto (blocks where the
    criterion and the model allow it)."""
    cfg = ctx.cfg
    names = list(masks.weights)
    always = ctx.channel_frozen(model) if cfg.prune.granularity == "channel" else ()
    layer_sparsity = layer_targets(names, sparsity, dict(cfg.prune.layer_rates)) if cfg.prune.scope == "layerwise" else None
    params = ctx.prunable(model)

    def step(masks: MaskSet, group: list[str], **how: Any) -> MaskSet:
        frozen = tuple(n for n in names if n not in group or n in always)
        if len(frozen) == len(names):
            return masks
        return prune_step(model, params, masks, sparsity, criterion=cfg.criterion, prune=cfg.prune,
                          loss_fn=ctx.task.loss, seed=cfg.seed, frozen=frozen, layer_sparsity=layer_sparsity, **how)

    reads = CRITERIA.meta(cfg.criterion.name)["reads"]
    groups = sequential_blocks(names) if cfg.schedule.sequential else [names]
    # magnitude, random (reads "weights"): no block's inputs change a score, so each block is pruned with nothing run
    use_blocks = cfg.schedule.sequential and engine != "model" and not (engine == "auto" and reads == "model") and reads != "weights"
    stack = block_list(model, names) if use_blocks else None
    if stack is None:
        for group in groups:
            masks = step(masks, group, batches=ctx.scoring_batches())
        return masks
    prefix, blocks = stack
    inside = [n for n in names if block_of(n, prefix) is not None]
    first = names.index(inside[0])
    before = [g for g in groups if g[0] not in inside and names.index(g[0]) < first]
    after = [g for g in groups if g[0] not in inside and names.index(g[0]) > first]
    for group in before:
        masks = step(masks, group, batches=ctx.scoring_batches())
    masks = prune_blocks(ctx, model, blocks, prefix, masks, step)
    for group in after:
        masks = step(masks, group, batches=ctx.scoring_batches())
    return masks


def offloading(ctx: RunContext, model: nn.Module) -> bool:
    """Whether the model stays on the CPU while its blocks are pruned one at a time on the device."""
    if ctx.device.type != "cuda" or ctx.cfg.schedule.offload == "never":
        return False
    if ctx.cfg.schedule.offload == "always":
        return True
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return size > 0.5 * torch.cuda.get_device_properties(ctx.device).total_memory


def prune_blocks(ctx: RunContext, model: nn.Module, blocks: nn.ModuleList, prefix: str, masks: MaskSet,
                 step: Callable[..., MaskSet]) -> MaskSet:
    """The blocks engine (`pruneexp.pruning.blocks`): block 0's inputs recorded once, then each
    block pruned on its cached inputs and run once more to feed the next."""
    offload = offloading(ctx, model)
    if offload:
        model.to("cpu")
    inputs = first_block_inputs(model, blocks[0], ctx.scoring_batches()(), ctx.device)
    names = list(masks.weights)
    last = max(block_of(n, prefix) for n in names if block_of(n, prefix) is not None)
    for index, block in enumerate(blocks):
        if index > last:
            break
        if offload:
            block.to(ctx.device)
        group = [n for n in names if block_of(n, prefix) == index]
        masks = step(masks, group, batches=lambda: ((inp, None) for inp in inputs), forward=block_forward(block))
        if index < last:
            inputs = next_inputs(block, inputs)
        if offload:
            block.to("cpu")
    if offload:
        model.to(ctx.device)
    if not ctx.quiet:
        print(f"pruned {last + 1} blocks of {prefix} on {len(inputs)} calibration batches: {peak_memory(ctx.device)}")
    return masks


def prune_heads(ctx: RunContext, model: nn.Module, masks: MaskSet) -> MaskSet:
    """Remove schedule.heads of all attention heads, the least important by Michel et al.'s score
    on the calibration batches (or chosen at random, seeded by the run seed); the masks applied."""
    s = ctx.cfg.schedule
    if s.head_score == "michel":
        scores = head_importance(model, ctx.scoring_batches(), ctx.task.loss)
    else:
        gen = torch.Generator().manual_seed(ctx.cfg.seed)
        scores = {n: torch.rand(m.n_head, generator=gen, dtype=torch.float64) for n, m in attention_layers(model).items()}
    new = head_masks(model, masks, select_heads(scores, float(s.heads)))
    new.apply_(model)
    return new


def load_dense(ctx: RunContext, model: nn.Module, masks: MaskSet) -> Any:
    """The dense network: trained (or read from the dense cache), loaded from schedule.checkpoint,
    or taken as built."""
    s = ctx.cfg.schedule
    if s.checkpoint:
        state = torch.load(Path(s.checkpoint).expanduser(), map_location=ctx.device, weights_only=True)
        model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        return None
    if not s.train_dense:
        return None
    return ctx.train_dense(model, masks)


@SCHEDULES.register("posttrain", check=check, config=PosttrainConfig)
def posttrain(ctx: RunContext) -> Iterator[Level]:
    """Train or load the dense model, prune it block by block on calibration data with no
    retraining (SparseGPT / Wanda protocol), optionally fine-tune briefly. Levels: 0 dense,
    1 pruned, 2 fine-tuned (when schedule.finetune.duration > 0)."""
    cfg = ctx.cfg
    model = ctx.build_model()
    dense_masks = ctx.dense_masks(model)
    dense = ctx.level(0, "dense", model, dense_masks, lambda: (dense_masks, load_dense(ctx, model, dense_masks)))
    yield dense
    prune = prune_heads if cfg.schedule.heads > 0 else lambda c, m, masks: prune_sequential(c, m, masks, cfg.sparsity)
    pruned = ctx.level(1, "pruned", model, dense.masks, lambda: (prune(ctx, model, dense.masks), None))
    yield pruned
    finetune = ctx.train_cfg(cfg.schedule.finetune)
    if to_steps(cfg.schedule.finetune.duration, 1) > 0:  # "0it" or "0ep": no fine-tuning
        yield ctx.level(2, "finetuned", model, pruned.masks,
                        lambda: (pruned.masks, ctx.train(model, pruned.masks, finetune, "finetune", 2)))
