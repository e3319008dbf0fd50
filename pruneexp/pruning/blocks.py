"""A model's transformer blocks, run one at a time on cached inputs: the engine of post-training
pruning at LLM scale, as in the SparseGPT and Wanda reference codes (`llama.py`, `prune.py`):

    inps = the inputs of block 0 for every calibration batch        (one embedding pass: the model
           runs until block 0 is called, which records its arguments and stops it)
    for block in blocks:
        prune the block's layers, their statistics gathered while block(inps) runs
        inps = block(inps)              # the pruned block's outputs are the next block's inputs

Each block runs at most twice per calibration sample (once for the statistics, once for its
outputs), so the cost is O(blocks) block forwards, never a whole-model forward per block. With
`home` and `device` apart (a model kept on the CPU, pruned on a GPU) a block visits the device only
while it is pruned. Hand-written because no library exposes this loop: the reference codes hard-code
it per model family (a `Catcher` module on `model.layers[0]`); here any nn.ModuleList of blocks whose
first block receives the hidden states as its first argument is found and driven alike (LLaMA,
Mistral, Qwen, OPT, GPT-2 and pruneexp's own GPT).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

_BLOCK = re.compile(r"^(.*?)\.(\d+)\.")


class _Captured(Exception):
    """Raised by the hook on block 0 once it has recorded its inputs: the rest of the model never runs."""


@dataclass
class BlockInput:
    """What one calibration batch hands a block: the hidden states and every other argument the
    model passed it (attention mask, rotary position embeddings, cache position, ...)."""

    hidden: Tensor
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def block_list(model: nn.Module, names: list[str]) -> tuple[str, nn.ModuleList] | None:
    """The nn.ModuleList of blocks that owns the most of the prunable weights `names` ("model.layers"
    of a LLaMA: "model.layers.3.mlp.up_proj.weight" belongs to its block 3), or None when no
    weight lies in a ModuleList."""
    counts: dict[str, int] = {}
    for n in names:
        m = _BLOCK.match(n)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    modules = dict(model.named_modules())
    found = [(k, modules[k]) for k in sorted(counts, key=lambda k: -counts[k]) if isinstance(modules.get(k), nn.ModuleList)]
    return found[0] if found else None


def block_of(name: str, prefix: str) -> int | None:
    """The index of the block of `prefix` that weight `name` lies in, or None."""
    m = _BLOCK.match(name)
    return int(m.group(2)) if m and m.group(1) == prefix else None


def _to(obj: Any, device: torch.device) -> Any:
    """Tensors inside (nested tuples, lists, dicts of) `obj` moved to `device`; the rest as is."""
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def first_block_inputs(model: nn.Module, first: nn.Module, batches: Iterator[tuple[Tensor, Any]],
                       device: torch.device) -> list[BlockInput]:
    """Run each batch through `model` until `first` is called; record what it was called with
    (moved to `device`) and stop there. The model runs in eval mode, without gradients."""
    captured: list[BlockInput] = []

    def record(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if args:
            hidden, rest = args[0], args[1:]
        else:  # called with keywords only (hidden_states=...)
            key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
            hidden, rest = kwargs[key], ()
            kwargs = {**{k: v for k, v in kwargs.items() if k != key}, "__hidden_key__": key}
        captured.append(BlockInput(hidden.detach().to(device), _to(rest, device), _to(dict(kwargs), device)))
        raise _Captured

    handle = first.register_forward_pre_hook(record, with_kwargs=True)
    home = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, _ in batches:
                try:
                    model(x.to(home))
                except _Captured:
                    pass
    finally:
        handle.remove()
        model.train(was)
    return captured


def run_block(block: nn.Module, inp: BlockInput) -> Tensor:
    """block(hidden, *args, **kwargs): the block's output hidden states (the first element when it
    returns a tuple, as older transformers decoder layers do)."""
    kwargs = dict(inp.kwargs)
    key = kwargs.pop("__hidden_key__", None)
    out = block(*inp.args, **{key: inp.hidden}, **kwargs) if key else block(inp.hidden, *inp.args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def block_forward(block: nn.Module) -> Callable[[BlockInput], Tensor]:
    """A scoring `forward` (ScoreContext.forward) that runs `block` alone on one cached input."""
    return lambda inp: run_block(block, inp)


def next_inputs(block: nn.Module, inputs: list[BlockInput]) -> list[BlockInput]:
    """The (pruned) block's outputs, each in place of its input's hidden states: the next block's inputs."""
    was = block.training
    block.eval()
    try:
        with torch.no_grad():
            return [BlockInput(run_block(block, inp), inp.args, inp.kwargs) for inp in inputs]
    finally:
        block.train(was)


def peak_memory(device: torch.device) -> str:
    """The process's peak memory so far: CUDA's max allocated on a CUDA device, else the peak resident set."""
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB peak CUDA memory allocated"
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return f"{rss / (2**30 if sys.platform == 'darwin' else 2**20):.2f} GiB peak resident memory"
