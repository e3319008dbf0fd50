"""Measurement: FLOPs (dense and effective) and, on a hardware target, latency."""

from pruneexp.measure.flops import LayerFlops, count_layer_flops, effective_flops

__all__ = ["LayerFlops", "count_layer_flops", "effective_flops"]
