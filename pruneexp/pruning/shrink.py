"""Physically shrink a channel-masked model: remove pruned output channels / neurons of conv and
linear layers (and what they feed: BatchNorm entries, the input slices of the next layers, residual
partners) with torch-pruning's DependencyGraph (Fang et al. 2023, "DepGraph: Towards Any Structural
Pruning", CVPR), so residual and BatchNorm couplings are handled by a maintained library.

When a channel is removable. Channel `i` of a layer is *dead* in the masked model when its output is
exactly zero whatever the input: its whole weight slice `weight[i, ...]` is False in the MaskSet, its
bias (if any) is masked at `i`, and (for BatchNorm, whose output does not vanish with its input)
its scale and shift are both masked at `i`. torch-pruning couples channels into groups (a conv, its
BatchNorm, the consumers' input slices, and across a residual addition every layer writing into the
same sum). A group index is removed only when EVERY producer in the group (each conv/linear out
channel and BatchNorm entry) is dead there; then everything downstream reads a zero and dropping the
channel leaves the function unchanged. Indices where some producers are dead and others are not
(a residual channel pruned in one block but not in its partners) are *inconsistent*: they are kept
and reported, never forced. At least one channel of every group is kept. The shrunk model is always
checked against the masked model by the caller (see `pruneexp.measure.forms`).

Parameter count. `ShrinkResult.params` is the number of parameter entries of the shrunk model. It
equals `live_params(masked)`: the masked model's non-zero count in the MaskSet sense (every parameter
entry not masked out; buffers such as BatchNorm running statistics are not parameters) minus the
entries that only read a removed channel (the consumers' input slices, which the channel-mask
convention leaves unmasked) counting only entries kept by the masks there.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from pruneexp.io import save_torch
from pruneexp.models.base import cast_input, example_batch
from pruneexp.pruning.masks import MaskSet

PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class GroupReport:
    """What happened to one torch-pruning group (named by its root layer)."""

    root: str
    channels: int  # channels in the group
    removed: int  # channels physically removed
    inconsistent: int  # channels dead in some producers of the group but not in all (kept)
    note: str = ""


@dataclass
class ShrinkResult:
    """The shrunk model (a new module; the input model is untouched) and how it was obtained."""

    model: nn.Module
    groups: list[GroupReport] = field(default_factory=list)
    params: int = 0  # parameter entries of the shrunk model
    live_params: int = 0  # the masked model's kept entries minus those that only read a removed channel

    @property
    def removed(self) -> int:
        """Channels physically removed, over all groups."""
        return sum(g.removed for g in self.groups)

    @property
    def inconsistent(self) -> int:
        """Coupled channels dead in some producers but not all (kept, so outputs stay the same)."""
        return sum(g.inconsistent for g in self.groups)

    def summary(self) -> str:
        """One line: channels removed per layer, and inconsistent channels kept."""
        parts = [f"{g.root}:-{g.removed}/{g.channels}" for g in self.groups if g.removed]
        text = "removed " + (", ".join(parts) if parts else "nothing")
        if self.inconsistent:
            bad = [f"{g.root}:{g.inconsistent}" for g in self.groups if g.inconsistent]
            text += "; kept inconsistent coupled channels " + ", ".join(bad)
        return text


def _dead_out(module: nn.Module, name: str, masks: MaskSet) -> Tensor | None:
    """Bool per output channel: True where the module's output is zero whatever its input; None if the
    module has no parameters to judge (then it does not constrain the group)."""
    if isinstance(module, PRODUCERS):
        w = masks.masks.get(f"{name}.weight")
        if w is None:
            return torch.zeros(module.weight.shape[0], dtype=torch.bool)
        dead = ~w.reshape(w.shape[0], -1).any(dim=1).cpu()
        if module.bias is not None:
            b = masks.masks.get(f"{name}.bias")
            dead &= torch.zeros_like(dead) if b is None else ~b.cpu()
        return dead
    if isinstance(module, NORMS):
        if not module.affine:
            return torch.zeros(module.num_features, dtype=torch.bool)
        w, b = masks.masks.get(f"{name}.weight"), masks.masks.get(f"{name}.bias")
        if w is None or b is None:
            return torch.zeros(module.num_features, dtype=torch.bool)
        return ~w.cpu() & ~b.cpu()
    return None


def _example_inputs(model: nn.Module, input_shape: tuple[int, ...]) -> Tensor:
    p = next(model.parameters())
    return cast_input(example_batch(model, 1, input_shape, device=p.device).zero_(), p.dtype)


def shrink(model: nn.Module, masks: MaskSet, input_shape: tuple[int, ...],
           ignored: list[str] | None = None) -> ShrinkResult:
    """Return a physically smaller copy of `model` with every fully-dead coupled channel removed.

    `masks` are applied to the copy first. `input_shape` (no batch) traces the dependency graph.
    `ignored` names modules that keep their output channels; by default the last nn.Linear (the
    classifier, whose outputs are the logits). See the module docstring for the removal rule.

    `params == live_params` holds exactly when every masked-out entry lies in a removed channel
    (consistent channel masks, no layer fully pruned); unstructured zeros stay in the shrunk model.
    """
    model = copy.deepcopy(model).eval()
    masks = masks.to(next(model.parameters()).device)
    masks.apply_(model)
    names = {m: n for n, m in model.named_modules()}
    if ignored is None:
        ignored_modules = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    else:
        ignored_modules = [model.get_submodule(n) for n in ignored]
    cpu_masks = masks.to("cpu")
    live = _kept_entries(model, cpu_masks)

    dg = tp.DependencyGraph().build_dependency(model, example_inputs=_example_inputs(model, input_shape))
    plans: list[tuple[nn.Module, Any, list[int]]] = []
    reports: list[GroupReport] = []
    for group in dg.get_all_groups(ignored_layers=ignored_modules, root_module_types=list(PRODUCERS)):
        root_dep, root_idxs = group._group[0]
        root = root_dep.target.module
        n = len(root_idxs)
        dead = torch.ones(n, dtype=torch.bool)
        any_dead = torch.zeros(n, dtype=torch.bool)
        note = ""
        for dep, idxs in group._group:
            module = dep.target.module
            if not dg.is_out_channel_pruning_fn(dep.handler):
                continue
            d = _dead_out(module, names.get(module, ""), cpu_masks)
            if d is None:
                continue
            if len(idxs) != n:
                dead[:] = False
                note = f"index map of {names.get(module)} is not one-to-one; group kept"
                break
            d = d[torch.as_tensor(idxs)]
            dead &= d
            any_dead |= d
        remove = dead.nonzero().flatten().tolist()
        if len(remove) == n:  # keep one (dead) channel so the layer still exists
            remove = remove[1:]
            note = note or "every channel dead; one kept"
        inconsistent = int((any_dead & ~dead).sum())
        reports.append(GroupReport(names[root], n, len(remove), inconsistent, note))
        if remove:
            plans.append((root, root_dep.handler, [root_idxs[i] for i in remove]))

    for root, handler, idxs in plans:
        group = dg.get_pruning_group(root, handler, idxs=idxs)
        live -= _dead_input_entries(group, dg, names, cpu_masks)
        group.prune()
    params = sum(p.numel() for p in model.parameters())
    return ShrinkResult(model=model, groups=reports, params=params, live_params=live)


def _kept_entries(model: nn.Module, masks: MaskSet) -> int:
    """Parameter entries not masked out (the MaskSet's non-zero count over all parameters)."""
    total = 0
    for name, p in model.named_parameters():
        m = masks.masks.get(name)
        total += p.numel() if m is None else int(m.sum())
    return total


def _dead_input_entries(group: Any, dg: Any, names: dict[nn.Module, str], masks: MaskSet) -> int:
    """Kept entries that a group's removal deletes: the producers' own dead entries are already
    masked out (not counted as kept), so what remains are the input slices of consumers
    (weight[:, i] of the next conv/linear) that the channel masks leave unmasked."""
    removed = 0
    for dep, idxs in group._group:
        module = dep.target.module
        if dg.is_out_channel_pruning_fn(dep.handler) or not isinstance(module, PRODUCERS):
            continue
        name = names.get(module, "")
        w = masks.masks.get(f"{name}.weight")
        idx = torch.as_tensor(list(idxs))
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module.groups > 1:
            raise NotImplementedError("grouped convolutions are not supported by the shrink count")
        slice_numel = module.weight[:, 0].numel()
        removed += len(idx) * slice_numel if w is None else int(w[:, idx].sum())
    return removed


def save_shrunk(model: nn.Module, path: str) -> None:
    """Save a shrunk model as plain tensors (its state_dict, whose shapes carry the new widths),
    atomically; `load_shrunk` rebuilds it on a dense twin. No pickled classes: the file loads
    with `torch.load(weights_only=True)`, so a crafted file cannot run code."""
    save_torch({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)


def load_shrunk(path: str, dense: nn.Module, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a model saved by `save_shrunk` into `dense`, a freshly built model of the architecture
    it was shrunk from: every linear, conv and BatchNorm layer is resized to the saved shapes, then
    the weights are loaded. Returns `dense`, now the shrunk model."""
    state = torch.load(path, map_location=map_location, weights_only=True)["state_dict"]
    resize_to(dense, state)
    dense.load_state_dict(state)
    return dense


def resize_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give each linear, conv and BatchNorm layer of `model` the widths its entries in `state`
    have (new, uninitialised tensors of those shapes; the caller loads the values)."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        for key, param in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            saved = state.get(prefix + key)
            if saved is not None and saved.shape != param.shape:
                new = torch.empty(saved.shape, dtype=param.dtype, device=param.device)
                setattr(module, key, nn.Parameter(new, requires_grad=param.requires_grad) if isinstance(param, nn.Parameter) else new)
        w = getattr(module, "weight", None)
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = w.shape
        elif isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            module.out_channels, module.in_channels = w.shape[0], w.shape[1] * module.groups
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.num_features = module.running_mean.shape[0]
