"""Regularizers: sparsity from the loss (`regularizer=l1|l2|group_lasso|elastic_net|sparse_group_lasso`).

Each method is one file here plus `conf/regularizer/NAME.yaml`: a `Penalty` subclass (its value
R(w) and its proximal operator), registered with `@REGULARIZERS.register(NAME, config=...,
granularities=...)`. The penalty acts in the training loop's sparsifier hook (see
`pruneexp.regularizers.base.PenaltySparsifier`): added to the loss (`update=subgradient`) or applied
as a proximal step after the optimizer step (`update=proximal`, exact zeros). `schedule=regularized`
trains with it, thresholds the weights or groups it drove to zero into the run's MaskSet, and
fine-tunes as its config says. `regularizer=none` (the default) is no regularizer at all and is
left out of the run hash.
"""

from __future__ import annotations

from pruneexp.registry import Registry, import_modules

REGULARIZERS: Registry = Registry("regularizer")

import_modules(__name__)  # every module of this package registers its method: a new one is a new file

__all__ = ["REGULARIZERS"]
