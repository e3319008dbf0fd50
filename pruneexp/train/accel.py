"""How the training step runs on the hardware: its arithmetic precision, the memory format of
image tensors, and compilation. Each is a config switch in the run hash (pruneexp/config.py's
HASH_NEUTRAL: fp32, channels_last false and compile false reproduce the runs made before them).

- `train.precision=fp32|bf16|fp16`: the forward pass (and the loss) under `torch.autocast` on the
  run's device type in that dtype; weights, gradients and the optimizer stay float32 (Micikevicius
  et al. 2018, "Mixed Precision Training"). fp16 adds dynamic loss scaling (`torch.amp.GradScaler`):
  the loss is multiplied by s before backward, gradients divided by s before the step; a step whose
  gradients hold inf/NaN is skipped and s halved, s doubled after `growth_interval` clean steps.
  bf16 has float32's exponent range, so it needs no scaling.
- `hardware.channels_last`: the model's 4-d weights and each image batch in NHWC memory order (the
  layout oneDNN and cuDNN convolutions run fastest in); the same values, other strides.
- `train.compile=true`: the training forward through `torch.compile` (TorchDynamo + Inductor: C++/
  OpenMP kernels on CPU, Triton on CUDA); the compiled module shares the model's parameters, so
  the masks re-applied to them hold for it.

The loop (`train/loop.py`) keeps the step visible; this module only answers "which context, which
scaler, which module, which layout".
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import weakref
from typing import Any, ContextManager

import torch
from torch import Tensor, nn

from pruneexp.errors import PruneexpError

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """A PruneexpError, before any work, for a precision torch cannot autocast on `device`."""
    if precision not in PRECISIONS:
        raise PruneexpError(f"Unknown train.precision '{precision}'; known: {', '.join(PRECISIONS)}.")
    dtype = PRECISIONS[precision]
    if dtype is not None and not torch.amp.is_autocast_available(device.type):
        raise PruneexpError(f"train.precision={precision}: torch has no autocast for device type '{device.type}'; use train.precision=fp32.")
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise PruneexpError("train.precision=bf16: this GPU has no bfloat16 arithmetic (compute capability < 8.0); use fp16 or fp32.")


def autocast(precision: str, device: torch.device) -> ContextManager[Any]:
    """The context the forward pass and loss run in: torch.autocast(device.type, dtype) for bf16 and
    fp16, nothing for fp32 (so fp32 runs compute exactly as before the switch existed)."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The dynamic loss scaler of an fp16 run (torch's defaults: s0 = 2^16, x2 every 2000 clean
    steps, x0.5 on an overflow); None for fp32 and bf16."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def channels_last(x: Tensor) -> Tensor:
    """An image batch (N, C, H, W) in channels-last memory order; other tensors unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def match_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter optimizer state tensor of a parameter's shape that parameter's
    strides (a state loaded from elsewhere may be contiguous while the weight is channels-last).
    Needed for correctness, not speed: torch 2.14's fused SGD walks the parameter, gradient and
    momentum buffer as flat memory, and with a contiguous buffer beside a channels-last weight it
    updates the weight with the wrong buffer entries, silently (seen on CPU)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for k, v in state.items():
                if isinstance(v, Tensor) and v.shape == p.shape and v.dim() > 1 and v.stride() != p.stride():
                    state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def skip_in_python(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Make `GradScaler.step` skip an overflowed step itself (`if not found_inf: optimizer.step()`, one
    sync per step) instead of handing `found_inf` to a fused kernel. Needed for correctness: torch
    2.14's fused SGD allocates its momentum buffers with `empty_like` on the first step and, when
    that step is skipped for an overflow, leaves them uninitialised; the next taken step then reads
    garbage (weights at 1e35 on a toy MLP, seen on CPU). Returns `optimizer`."""
    optimizer._step_supports_amp_scaling = False  # read by GradScaler.step; the fused update itself stays
    return optimizer


_COMPILED: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


def compiled(model: nn.Module) -> nn.Module:
    """`torch.compile(model)`, one per model object (a model trained again, e.g. at the next IMP level,
    reuses its compiled wrapper and Dynamo's cache). The wrapper calls `model.forward` on `model`'s
    own parameters: nothing is copied, so masks applied to `model` are what the compiled step uses.
    Another instance of the same model class reuses the graph (parameters are graph inputs)."""
    wrapper = _COMPILED.get(model)
    if wrapper is None:
        # Past its recompile limit Dynamo would run the frame eagerly with a log line; fail instead.
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        wrapper = _COMPILED[model] = torch.compile(model)
    return wrapper


def forget_compiled() -> None:
    """Drop the compiled wrappers `compiled` keeps (end of a run; Dynamo's own cache of graphs
    stays, so the next run of the same model class reuses them). A wrapper holds its model, so a
    weak key alone would never let either go: every model a sweep compiled would stay in memory."""
    _COMPILED.clear()


@functools.cache
def check_compile(device_type: str) -> None:
    """A PruneexpError, before training, when torch.compile's default backend (Inductor) cannot
    build kernels for `device_type`: a C++ compiler for CPU, Triton for CUDA. torch.compile is
    never silently replaced by eager execution."""
    if device_type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            cxx = get_cpp_compiler()
        except Exception as err:  # noqa: BLE001 - whatever inductor raises, the message says what is missing
            raise PruneexpError(f"train.compile=true: torch.compile's CPU backend (Inductor) found no C++ compiler ({err}); "
                                "install gcc/g++ (or set CXX), or use train.compile=false.") from None
        if shutil.which(cxx) is None:
            raise PruneexpError(f"train.compile=true: torch.compile's CPU backend (Inductor) needs the C++ compiler '{cxx}', "
                                "which is not on PATH; install gcc/g++ (or set CXX), or use train.compile=false.")
    elif device_type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise PruneexpError("train.compile=true: torch.compile's CUDA backend (Inductor) needs Triton, which is not "
                                "installed (pip install triton); or use train.compile=false.")
    else:
        raise PruneexpError(f"train.compile=true is supported on cpu and cuda devices, not '{device_type}'.")


__all__ = ["PRECISIONS", "autocast", "channels_last", "check_compile", "check_precision", "compiled", "forget_compiled", "grad_scaler",
           "match_layout", "skip_in_python"]
