"""Attention heads as prunable units (Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better
than One?"), for attention modules shaped like `pruneexp.models.gpt.CausalSelfAttention`: a fused
projection `c_attn` whose rows are [q | k | v], head h owning rows h*d:(h+1)*d of each, and an
output projection `c_proj` whose input is the heads' contexts concatenated.

- Importance: I_h = sum over calibration sequences and tokens of |<ctx_h, dL/dctx_h>| (the absolute
  value per token), ctx_h head h's context (its slice of c_proj's input), each layer's scores then
  divided by their l2 norm over the layer's heads (Michel et al.'s per-layer normalisation).
- Masks: removing head h masks its q, k and v rows of c_attn (weights and bias) and its columns of
  c_proj; its scores become 0, its values 0, so its context is exactly 0 and the rest of the model
  computes what it would with the head gone.
- Shrink: c_attn and c_proj rebuilt without the removed heads and `n_head` lowered. Written by hand:
  torch-pruning (MetaPruner with `num_heads`) prunes heads it chooses by its own importance and leaves
  the module's head count to the caller; removing heads chosen here from a mask is a row/column
  selection of two Linears.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from pruneexp.errors import PruneexpError
from pruneexp.pruning.masks import MaskSet


def attention_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every attention module with a fused `c_attn`, an output `c_proj` and `n_head`, by name."""
    found = {n: m for n, m in model.named_modules() if hasattr(m, "c_attn") and hasattr(m, "c_proj") and hasattr(m, "n_head")}
    if not found:
        raise PruneexpError("head pruning needs attention modules with c_attn (fused q/k/v), c_proj and n_head (model=gpt).")
    return found


def head_importance(model: nn.Module, batches: Callable[[], Iterator[tuple[Tensor, Tensor]]],
                    loss_fn: Callable[[Tensor, Tensor], Tensor]) -> dict[str, Tensor]:
    """Michel et al.'s I_h per attention layer (module docstring), normalised per layer."""
    layers = attention_layers(model)
    scores = {n: torch.zeros(m.n_head, dtype=torch.float64) for n, m in layers.items()}
    contexts: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
            args[0].retain_grad()
            contexts[name] = args[0]
        return hook

    handles = [m.c_proj.register_forward_pre_hook(keep(n)) for n, m in layers.items()]
    was = model.training
    model.eval()
    try:
        for x, y in batches():
            contexts.clear()
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            for n, m in layers.items():
                ctx = contexts[n]
                per_token = (ctx * ctx.grad).reshape(*ctx.shape[:-1], m.n_head, -1).sum(-1).abs()
                scores[n] += per_token.reshape(-1, m.n_head).sum(0).double().cpu()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was)
    return {n: s / s.norm().clamp_min(1e-30) for n, s in scores.items()}


def select_heads(scores: dict[str, Tensor], fraction: float) -> dict[str, list[int]]:
    """The round(fraction * all heads) lowest-scored heads over all layers (ties: the earlier layer
    and head first), at least one head kept in every layer: {layer: removed head indices}."""
    flat = [(float(s), i, n, h) for i, (n, v) in enumerate(scores.items()) for h, s in enumerate(v.tolist())]
    todo = round(fraction * len(flat))
    left = {n: len(v) for n, v in scores.items()}
    removed: dict[str, list[int]] = {n: [] for n in scores}
    for _, _, n, h in sorted(flat):
        if todo == 0:
            break
        if left[n] > 1:
            removed[n].append(h)
            left[n] -= 1
            todo -= 1
    return {n: sorted(v) for n, v in removed.items()}


def head_rows(module: nn.Module, heads: list[int]) -> Tensor:
    """Row indices of c_attn (q, k and v) that belong to `heads`."""
    d = module.c_attn.out_features // 3 // module.n_head
    width = module.n_head * d
    return torch.tensor([part * width + h * d + j for part in range(3) for h in heads for j in range(d)], dtype=torch.long)


def head_masks(model: nn.Module, masks: MaskSet, removed: dict[str, list[int]]) -> MaskSet:
    """`masks` with the removed heads masked: their q/k/v rows of c_attn (weight and bias) and
    their columns of c_proj."""
    layers = attention_layers(model)
    params = dict(model.named_parameters())
    out = masks.clone()
    new = dict(out.masks)
    for n, heads in removed.items():
        if not heads:
            continue
        m = layers[n]
        d = m.c_attn.out_features // 3 // m.n_head
        rows = head_rows(m, heads)
        cols = torch.tensor([h * d + j for h in heads for j in range(d)], dtype=torch.long)
        for pname, index, dim in ((f"{n}.c_attn.weight", rows, 0), (f"{n}.c_attn.bias", rows, 0), (f"{n}.c_proj.weight", cols, 1)):
            if pname not in params:
                continue
            mask = new[pname].clone() if pname in new else torch.ones_like(params[pname], dtype=torch.bool)
            mask.index_fill_(dim, index.to(mask.device), False)
            new[pname] = mask
    return MaskSet(new, out.weights)


def dead_heads(module: nn.Module, name: str, masks: MaskSet) -> list[int]:
    """Heads whose q/k/v rows and c_proj columns are all masked (removable)."""
    out = []
    for h in range(module.n_head):
        rows = head_rows(module, [h])
        d = len(rows) // 3
        w = masks.masks.get(f"{name}.c_attn.weight")
        p = masks.masks.get(f"{name}.c_proj.weight")
        b = masks.masks.get(f"{name}.c_attn.bias")
        if w is None or p is None:
            continue
        if not w[rows].any() and not p[:, h * d:(h + 1) * d].any() and (b is None or not b[rows].any()):
            out.append(h)
    return out


@torch.no_grad()
def shrink_heads(model: nn.Module, masks: MaskSet) -> tuple[nn.Module, int]:
    """A copy of `model` with every dead head removed (module docstring); returns (model, heads removed).
    The masks are applied to the copy first; a layer keeps at least one head."""
    model = copy.deepcopy(model)
    masks.apply_(model)
    removed = 0
    for name, m in attention_layers(model).items():
        dead = dead_heads(m, name, masks)[: m.n_head - 1]
        if not dead:
            continue
        live = [h for h in range(m.n_head) if h not in dead]
        d = m.c_attn.out_features // 3 // m.n_head
        rows = head_rows(m, live)
        cols = torch.tensor([h * d + j for h in live for j in range(d)], dtype=torch.long)
        qkv = nn.Linear(m.c_attn.in_features, len(rows), bias=m.c_attn.bias is not None).to(m.c_attn.weight)
        qkv.weight.copy_(m.c_attn.weight[rows])
        if m.c_attn.bias is not None:
            qkv.bias.copy_(m.c_attn.bias[rows])
        proj = nn.Linear(len(cols), m.c_proj.out_features, bias=m.c_proj.bias is not None).to(m.c_proj.weight)
        proj.weight.copy_(m.c_proj.weight[:, cols])
        if m.c_proj.bias is not None:
            proj.bias.copy_(m.c_proj.bias)
        m.c_attn, m.c_proj, m.n_head = qkv, proj, len(live)
        removed += len(dead)
    return model, removed
