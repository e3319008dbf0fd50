"""Latency of every requested form of one pruned model, on one hardware target: build the form,
check it against the masked model, then time it (`pruneexp.measure.timing`). One row per
(form, batch size); a form that cannot be built is a row with status "not applicable" and the reason, a form
whose outputs differ from the masked model's is a row with status "mismatch" and is not timed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from pruneexp.errors import PruneexpError
from pruneexp.measure.flops import count_layer_flops
from pruneexp.measure.forms import FORMS, FormSpec, NotApplicable
from pruneexp.models.base import cast_input, example_batch
from pruneexp.measure.timing import Protocol, fixed_threads, machine_info, time_callable
from pruneexp.pruning.masks import MaskSet

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}
LEVEL_CHOICES = ("all", "ends", "final", "none")
# Row statuses. "n/a" would be read back as NaN by pandas (a default NA marker), hence the words.
OK, NOT_APPLICABLE, MISMATCH, ERROR = "ok", "not applicable", "mismatch", "error"

# latency.csv columns, in order (machine columns last).
COLUMNS = ("level", "name", "form", "batch_size", "status", "median_ms", "p10_ms", "p90_ms", "cv", "reps",
           "speedup_vs_dense", "flop_ratio", "connected_flop_ratio", "form_flop_ratio", "params", "equivalence_error",
           "tolerance", "compile", "detail", "machine", "device", "device_name", "torch", "threads", "dtype")


@dataclass(frozen=True)
class Target:
    """A hardware target as the latency code reads it (built from the `hardware` config node)."""

    device: torch.device
    dtype: torch.dtype
    threads: int | None
    batch_sizes: tuple[int, ...]
    forms: tuple[str, ...]
    protocol: Protocol
    tolerance: float
    compile: bool = False

    @classmethod
    def from_config(cls, hw: Any) -> "Target":
        """Read and check a `hardware` config node (see `pruneexp.config.HardwareConfig`)."""
        if hw.dtype not in DTYPES:
            raise PruneexpError(f"Unknown hardware.dtype '{hw.dtype}'; known: {', '.join(DTYPES)}.")
        for form in hw.forms:
            FORMS.get(form)
        if not hw.batch_sizes or any(b < 1 for b in hw.batch_sizes):
            raise PruneexpError(f"hardware.batch_sizes must be positive integers, got {list(hw.batch_sizes)}.")
        if hw.min_reps < 1 or hw.warmup < 0 or hw.min_time_s < 0 or hw.tolerance <= 0:
            raise PruneexpError("hardware.min_reps must be >= 1, hardware.warmup and hardware.min_time_s >= 0, "
                                "hardware.tolerance > 0.")
        if hw.levels not in LEVEL_CHOICES:
            raise PruneexpError(f"Unknown hardware.levels '{hw.levels}'; choose one of: {', '.join(LEVEL_CHOICES)}.")
        forms = ["dense", *(f for f in hw.forms if f != "dense")]  # first: every speedup is relative to it
        return cls(device=torch.device(hw.device), dtype=DTYPES[hw.dtype], threads=hw.threads,
                   batch_sizes=tuple(int(b) for b in hw.batch_sizes), forms=tuple(forms),
                   protocol=Protocol(warmup=hw.warmup, min_reps=hw.min_reps, min_time_s=hw.min_time_s),
                   tolerance=float(hw.tolerance), compile=bool(hw.compile))


def levels_to_time(choice: str, levels: list[int]) -> list[int]:
    """Which level numbers `hardware.levels` selects: all, ends (first and last), final, none."""
    if choice == "none" or not levels:
        return []
    if choice == "all":
        return list(levels)
    if choice == "final":
        return levels[-1:]
    return sorted({levels[0], levels[-1]})


def equivalence_error(out: Tensor, ref: Tensor) -> float:
    """Scale-relative max error: max|y_form - y_masked| / max(max|y_masked|, 1e-12)."""
    out, ref = out.float(), ref.float()
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def reference_outputs(model: nn.Module, masks: MaskSet, x: Tensor) -> Tensor:
    """The masked model's outputs in float32 (eval mode): the function every form must reproduce."""
    ref = copy.deepcopy(model).eval().to(x.device).float()
    masks.to(x.device).apply_(ref)
    with torch.inference_mode():
        return ref(cast_input(x, torch.float32))


def measure_level(model: nn.Module, masks: MaskSet, input_shape: tuple[int, ...], target: Target, *,
                  level: int = 0, name: str = "", flop_ratio: float | None = None,
                  connected_flop_ratio: float | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of latency.csv for one level: every form in `target.forms` at every batch size.

    Each form is built once, checked on a random batch (seeded) of each batch size against the
    masked model with `equivalence_error <= target.tolerance`, then timed under the target's thread
    count, dtype and protocol. `speedup_vs_dense` = dense median / form median (same level and batch
    size); `flop_ratio` is the level's FLOP ratio by its masks (what papers report),
    `connected_flop_ratio` by its effective masks (weights on an input-to-output path: the ideal
    speedup is 1 / it; blank where the network is not a chain), `form_flop_ratio` the FLOPs the form
    executes (counted with torch.utils.flop_counter; blank for sparse kernels, which it does not
    count) over the dense FLOPs.
    """
    rows: list[dict[str, Any]] = []
    with fixed_threads(target.threads) as threads:
        info = machine_info(target.device, threads, target.dtype)
        spec = FormSpec(target.device, target.dtype, tuple(input_shape))
        gen = torch.Generator().manual_seed(seed)
        inputs = {b: example_batch(model, b, input_shape, gen, target.device) for b in target.batch_sizes}
        refs = {b: reference_outputs(model, masks, x) for b, x in inputs.items()}
        dense_flops = None
        dense_ms: dict[int, float] = {}
        for form in target.forms:
            base = dict(level=level, name=name, form=form, flop_ratio=flop_ratio, connected_flop_ratio=connected_flop_ratio,
                        compile=target.compile, **info)
            try:
                built = FORMS.get(form)(model, masks, spec)
            except NotApplicable as why:
                rows.extend({**base, "batch_size": b, "status": NOT_APPLICABLE, "detail": str(why)} for b in target.batch_sizes)
                continue
            except Exception as exc:  # noqa: BLE001 - a library refusing this model is a result, not a crash
                why = f"building the form failed: {type(exc).__name__}: {str(exc)[:200]}"
                rows.extend({**base, "batch_size": b, "status": ERROR, "detail": why} for b in target.batch_sizes)
                continue
            if form == "masked":  # the dense architecture: the same FLOPs as `dense`
                form_flops = dense_flops if dense_flops is not None else _flops(model, input_shape)
            else:
                form_flops = _flops(built.module, input_shape) if form in ("dense", "shrunk") else None
            if form == "dense":
                dense_flops = form_flops
            module = built.module
            if target.compile:
                module = torch.compile(module)
            for b in target.batch_sizes:
                x = cast_input(inputs[b], target.dtype)
                row = {**base, "batch_size": b, "params": built.params, "detail": built.detail,
                       "tolerance": target.tolerance,
                       "form_flop_ratio": None if form_flops is None or not dense_flops else form_flops / dense_flops}
                try:
                    with torch.inference_mode():
                        err = equivalence_error(module(x), refs[b])
                except Exception as exc:  # a kernel refusing this shape or dtype is a result, not a crash
                    rows.append({**row, "status": ERROR, "detail": f"{built.detail}; {type(exc).__name__}: {str(exc)[:200]}"})
                    continue
                row["equivalence_error"] = err
                if not err <= target.tolerance:
                    rows.append({**row, "status": MISMATCH})
                    continue
                t = time_callable(lambda: module(x), target.device, target.protocol)
                if form == "dense":
                    dense_ms[b] = t.median_ms
                speedup = dense_ms[b] / t.median_ms if b in dense_ms and t.median_ms > 0 else None
                rows.append({**row, "status": OK, "median_ms": t.median_ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms,
                             "cv": t.cv, "reps": t.reps, "speedup_vs_dense": speedup})
    return [{c: r.get(c) for c in COLUMNS} for r in rows]


def _flops(module: nn.Module, input_shape: Iterable[int]) -> int | None:
    """Dense FLOPs of one example through `module` (a float32 copy), or None if it cannot be counted."""
    try:
        return count_layer_flops(copy.deepcopy(module).float(), tuple(input_shape), []).total
    except Exception:  # noqa: BLE001 - counting is best effort for exotic forms
        return None


def join_latency(levels: list[dict[str, Any]], latency: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The level rows with latency columns joined, at the largest batch size timed: `dense_ms`, and
    the fastest form that passed its check, dense included (`best_form`, `best_ms`, `best_speedup`;
    `fastest` is the two as one printable cell)."""
    out = []
    for row in levels:
        mine = [r for r in latency if r["level"] == row["level"] and r["status"] == OK]
        if not mine:
            out.append(dict(row))
            continue
        bs = max(r["batch_size"] for r in mine)
        at = [r for r in mine if r["batch_size"] == bs]
        dense = next((r for r in at if r["form"] == "dense"), None)
        best = min(at, key=lambda r: r["median_ms"])
        out.append({**row, "latency_batch": bs, "dense_ms": dense["median_ms"] if dense else None,
                    "best_form": best["form"], "best_ms": best["median_ms"], "best_speedup": best["speedup_vs_dense"],
                    "fastest": f"{best['form']} {best['speedup_vs_dense']:.2f}x"})
    return out
