"""Building a ScoreContext by hand for criterion tests."""

from __future__ import annotations

from types import SimpleNamespace

import torch.nn.functional as F

from pruneexp.pruning.criteria import ScoreContext
from pruneexp.pruning.groups import Granularity
from pruneexp.pruning.masks import MaskSet, prunable_weights

DEFAULTS = dict(variant="weight", probes=8, damping=0.01, p=1.0, source="activations", options={}, blocksize=128, precision="float32")


def context(model, batches, *, loss_fn=F.cross_entropy, granularity="weight", params=None, seed=0, **cfg):
    """A ScoreContext over `batches` (a list of (x, y)) with criterion options `cfg`."""
    params = prunable_weights(model) if params is None else params
    gran = granularity if isinstance(granularity, Granularity) else Granularity(granularity)
    return ScoreContext(model=model, params=params, masks=MaskSet.dense(params), batches=lambda: iter(batches),
                        loss_fn=loss_fn, cfg=SimpleNamespace(**{**DEFAULTS, **cfg}), seed=seed, granularity=gran)
