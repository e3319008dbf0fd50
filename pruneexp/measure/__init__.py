"""Measurement: FLOPs (dense, under the masks, on input-to-output paths) and, on a hardware target, latency."""

from pruneexp.measure.flops import LayerFlops, connected_flops, count_layer_flops, masked_flops

__all__ = ["LayerFlops", "connected_flops", "count_layer_flops", "masked_flops"]
