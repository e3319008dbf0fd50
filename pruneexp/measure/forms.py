"""Forms of a pruned model: the same function, stored and run in different ways. Each builder takes
the model (any weights) and its MaskSet and returns a module computing the *masked* model's function,
or raises NotApplicable with the reason. The latency code checks every built form against the masked
model's outputs before timing it (see `pruneexp.measure.latency`).

- ``dense``: the unpruned architecture in dense kernels; the masked-out weights are stored as zeros
  and multiplied like any other (the speed of the model before pruning).
- ``masked``: what most tools call pruned: `torch.nn.utils.prune.custom_from_mask`, a forward
  pre-hook recomputing ``weight = weight_orig * mask`` on every call.
- ``csr``: pruned nn.Linear layers run as sparse CSR matmul, ``y = (W_csr @ x^T)^T + b`` with
  `Tensor.to_sparse_csr` (MKL / cuSPARSE SpMM). Conv layers stay dense.
- ``semi_structured``: CUDA, compute capability >= 8.0, fp16/bf16: linear layers whose mask is 2:4
  (at most 2 kept of every 4 consecutive input weights) through
  `torch.sparse.to_sparse_semi_structured` (NVIDIA Ampere sparse tensor cores; Mishra et al. 2021,
  "Accelerating Sparse Deep Neural Networks").
- ``shrunk``: dead channels and neurons physically removed (`pruneexp.pruning.shrink`).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from pruneexp.errors import PruneexpError
from pruneexp.pruning.heads import attention_layers, dead_heads, shrink_heads
from pruneexp.pruning.masks import MaskSet
from pruneexp.pruning.shrink import shrink
from pruneexp.registry import Registry


class NotApplicable(Exception):
    """A form cannot be built for this model, mask or target; the message says why."""


@dataclass
class FormSpec:
    """What a builder needs to know about the target."""

    device: torch.device
    dtype: torch.dtype
    input_shape: tuple[int, ...]


@dataclass
class BuiltForm:
    """A runnable form: `module` maps a batch (in `dtype`, on `device`) to logits; `detail` says what
    was converted; `params` counts its stored parameter entries (sparse values for csr/2:4)."""

    module: nn.Module
    detail: str
    params: int


Builder = Callable[[nn.Module, MaskSet, FormSpec], BuiltForm]
FORMS: Registry[Builder] = Registry("form")


def masked_copy(model: nn.Module, masks: MaskSet, spec: FormSpec) -> nn.Module:
    """A deep copy in eval mode on the target device and dtype with the masks applied (zeros stored)."""
    out = copy.deepcopy(model).eval().to(spec.device)
    masks.to(spec.device).apply_(out)
    return out.to(spec.dtype)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@FORMS.register("dense")
def dense_form(model: nn.Module, masks: MaskSet, spec: FormSpec) -> BuiltForm:
    """The architecture in dense kernels with the pruned weights stored as zeros."""
    out = masked_copy(model, masks, spec)
    return BuiltForm(out, "dense kernels, zeros stored", _numel(out))


@FORMS.register("masked")
def masked_form(model: nn.Module, masks: MaskSet, spec: FormSpec) -> BuiltForm:
    """`torch.nn.utils.prune.custom_from_mask` on every masked parameter: weight_orig * mask per call."""
    out = copy.deepcopy(model).eval().to(spec.device).to(spec.dtype)
    modules = dict(out.named_modules())
    n = 0
    for name, mask in masks.masks.items():
        owner, _, pname = name.rpartition(".")
        torch_prune.custom_from_mask(modules[owner], pname, mask.to(spec.device))
        n += 1
    return BuiltForm(out, f"{n} parameters re-masked per forward (torch.nn.utils.prune)", _numel(out))


class CSRLinear(nn.Module):
    """y = (W_csr @ x^T)^T + b for a weight stored in sparse CSR; inputs of any leading shape."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Sparse CSR tensor support is in beta state"
            self.register_buffer("weight_csr", linear.weight.detach().to_sparse_csr())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.out_features = linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        """Sparse-dense matmul on the flattened batch, bias added, leading shape restored."""
        lead = x.shape[:-1]
        y = torch.sparse.mm(self.weight_csr, x.reshape(-1, x.shape[-1]).t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _pruned_linears(model: nn.Module, masks: MaskSet) -> tuple[list[str], str]:
    """Names of nn.Linear layers with at least one masked-out weight, or why there are none."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return [], "the model has no nn.Linear layer"
    pruned = [n for n in linears if f"{n}.weight" in masks and not bool(masks[f"{n}.weight"].all())]
    if not pruned:
        return [], f"none of its {len(linears)} nn.Linear layers has a pruned weight (a dense layer gains nothing in CSR)"
    return pruned, ""


@FORMS.register("csr")
def csr_form(model: nn.Module, masks: MaskSet, spec: FormSpec) -> BuiltForm:
    """Pruned linear layers as sparse CSR matmul; conv layers stay dense. Needs fp32/fp64 on CPU."""
    if spec.dtype not in (torch.float32, torch.float64) and spec.device.type == "cpu":
        raise NotApplicable(f"CPU sparse CSR matmul has no {spec.dtype} kernel here; use dtype=float32")
    names, why = _pruned_linears(model, masks)
    if not names:
        raise NotApplicable(why)
    out = masked_copy(model, masks, spec)
    stored = _numel(out)
    for n in names:
        lin = out.get_submodule(n)
        csr = CSRLinear(lin)
        stored += csr.weight_csr.values().numel() - lin.weight.numel()
        _replace(out, n, csr)
    return BuiltForm(out, "csr: " + ", ".join(names), stored)


def _is_two_four(mask: Tensor) -> bool:
    """True when every group of 4 consecutive weights along the input dimension keeps at most 2."""
    if mask.shape[-1] % 4:
        return False
    return bool((mask.reshape(mask.shape[0], -1, 4).sum(-1) <= 2).all())


@FORMS.register("semi_structured")
def semi_structured_form(model: nn.Module, masks: MaskSet, spec: FormSpec) -> BuiltForm:
    """2:4-masked linear layers through `torch.sparse.to_sparse_semi_structured` (CUDA, sm >= 80,
    fp16/bf16). Linear layers whose mask is not 2:4 or whose shape the kernel rejects stay dense."""
    if spec.device.type != "cuda":
        raise NotApplicable(f"semi-structured 2:4 sparsity needs a CUDA device with compute capability >= 8.0; target is {spec.device}")
    cc = torch.cuda.get_device_capability(spec.device)
    if cc < (8, 0):
        raise NotApplicable(f"semi-structured 2:4 sparsity needs compute capability >= 8.0; {torch.cuda.get_device_name(spec.device)} is {cc[0]}.{cc[1]}")
    if spec.dtype not in (torch.float16, torch.bfloat16):
        raise NotApplicable(f"semi-structured 2:4 kernels take float16 or bfloat16, not {spec.dtype}; set hardware.dtype")
    names, why = _pruned_linears(model, masks)
    if not names:
        raise NotApplicable(why)
    from torch.sparse import to_sparse_semi_structured

    out = masked_copy(model, masks, spec)
    converted, skipped = [], []
    for n in names:
        if not _is_two_four(masks[f"{n}.weight"]):
            skipped.append(f"{n} (mask not 2:4)")
            continue
        lin = out.get_submodule(n)
        try:
            lin.weight = nn.Parameter(to_sparse_semi_structured(lin.weight.detach()), requires_grad=False)
        except (RuntimeError, ValueError) as err:
            skipped.append(f"{n} ({str(err).splitlines()[0][:80]})")
            continue
        converted.append(n)
    if not converted:
        raise NotApplicable("no linear layer could be converted: " + "; ".join(skipped))
    detail = "2:4: " + ", ".join(converted) + (("; dense: " + "; ".join(skipped)) if skipped else "")
    return BuiltForm(out, detail, _numel(out))


def _attention(model: nn.Module) -> dict[str, nn.Module]:
    try:
        return attention_layers(model)
    except PruneexpError:
        return {}


@FORMS.register("shrunk")
def shrunk_form(model: nn.Module, masks: MaskSet, spec: FormSpec) -> BuiltForm:
    """Dead channels/neurons removed with torch-pruning's DependencyGraph (pruneexp.pruning.shrink)."""
    base = copy.deepcopy(model).eval().to(spec.device)
    if any(dead_heads(m, n, masks) for n, m in _attention(base).items()):  # whole attention heads masked
        shrunk, removed = shrink_heads(base, masks)
        return BuiltForm(shrunk.to(spec.dtype), f"{removed} attention heads removed", _numel(shrunk))
    result = shrink(base, masks, spec.input_shape)
    if result.removed == 0:
        why = ("no channel or neuron is dead in every coupled layer (whole weight row, bias and BatchNorm "
               "scale and shift masked), so there is nothing to remove")
        if result.inconsistent:
            why += f"; {result.inconsistent} channels are dead in some coupled layers only and were kept"
        raise NotApplicable(why)
    return BuiltForm(result.model.to(spec.dtype), result.summary(), result.params)
