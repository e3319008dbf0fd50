"""The timing protocol: warm-up, then timed calls until both a minimum time and a minimum count are
reached; the median with p10/p90 and the coefficient of variation; a fixed CPU thread count;
`torch.inference_mode`; CUDA events with synchronisation on a GPU.

Why the median and not the mean: latency distributions have a long right tail (scheduler, page
faults, frequency changes); the median is the robust central value, p10/p90 show the spread, and
CV = std / mean of the per-call samples says how much a single figure can be trusted.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch


@dataclass(frozen=True)
class Protocol:
    """How one latency figure is taken. `warmup` untimed calls first (caches, allocator, lazy
    kernel selection, torch.compile tracing); then timed calls until at least `min_reps` calls AND
    at least `min_time_s` seconds of timed work, capped at `max_reps` calls."""

    warmup: int = 10
    min_reps: int = 30
    min_time_s: float = 0.2
    max_reps: int = 100_000


@dataclass(frozen=True)
class Timing:
    """Per-call latency statistics in milliseconds over `reps` timed calls."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    cv: float  # std / mean of the samples (population std)
    reps: int

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> "Timing":
        """Summarise samples: median, 10th/90th percentiles (linear interpolation), mean and CV."""
        xs = sorted(samples_ms)
        mean = statistics.fmean(xs)
        std = statistics.pstdev(xs) if len(xs) > 1 else 0.0
        # 'inclusive' deciles interpolate linearly between order statistics, as numpy's default does
        deciles = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) > 1 else [xs[0]] * 9
        return cls(median_ms=statistics.median(xs), p10_ms=deciles[0], p90_ms=deciles[-1],
                   mean_ms=mean, cv=std / mean if mean > 0 else 0.0, reps=len(xs))


@contextlib.contextmanager
def fixed_threads(threads: int | None) -> Iterator[int]:
    """Run the block with `torch.set_num_threads(threads)` (None keeps the current count) and yield
    the thread count in effect; the previous count is restored afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def time_callable(fn: Callable[[], Any], device: torch.device, protocol: Protocol) -> Timing:
    """Time `fn()` (one forward pass) under `torch.inference_mode` following `protocol`.

    CPU: wall time of each call with `time.perf_counter_ns`. CUDA: a pair of CUDA events around each
    call on the current stream, the device synchronised before the first timed call and after the
    last, and elapsed times read only then (so timing does not serialise the launches; each sample
    is the GPU time between its two events).
    """
    device = torch.device(device)
    with torch.inference_mode():
        for _ in range(protocol.warmup):
            fn()
        if device.type == "cuda":
            return _time_cuda(fn, device, protocol)
        return _time_cpu(fn, protocol)


def _time_cpu(fn: Callable[[], Any], protocol: Protocol) -> Timing:
    samples: list[float] = []
    budget_ns = protocol.min_time_s * 1e9
    spent = 0
    while (len(samples) < protocol.min_reps or spent < budget_ns) and len(samples) < protocol.max_reps:
        t0 = time.perf_counter_ns()
        fn()
        dt = time.perf_counter_ns() - t0
        spent += dt
        samples.append(dt / 1e6)
    return Timing.from_samples(samples)


def _time_cuda(fn: Callable[[], Any], device: torch.device, protocol: Protocol) -> Timing:
    torch.cuda.synchronize(device)
    pairs = []
    started = time.perf_counter()
    while len(pairs) < protocol.max_reps:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
        if len(pairs) >= protocol.min_reps:
            torch.cuda.synchronize(device)  # wall time counts only finished work
            if time.perf_counter() - started >= protocol.min_time_s:
                break
    torch.cuda.synchronize(device)
    return Timing.from_samples([s.elapsed_time(e) for s, e in pairs])


def machine_info(device: torch.device | str, threads: int, dtype: torch.dtype) -> dict[str, Any]:
    """The columns recorded with every figure: machine, processor, device name, torch version,
    thread count and dtype."""
    device = torch.device(device)
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        cc = torch.cuda.get_device_capability(idx)
        device_name = f"{torch.cuda.get_device_name(idx)} (sm_{cc[0]}{cc[1]})"
    else:
        device_name = _cpu_name()
    return dict(machine=platform.machine(), device=str(device), device_name=device_name,
                torch=torch.__version__, threads=threads, dtype=str(dtype).removeprefix("torch."))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
