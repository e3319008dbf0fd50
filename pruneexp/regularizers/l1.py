"""`regularizer=l1`: λ Σ|w| (the lasso, Tibshirani 1996; on network weights e.g. Han et al. 2015's
L1 variant). Proximal step: the soft threshold S_{ηλ}(w), which reaches exact zeros."""

from pruneexp.regularizers import REGULARIZERS
from pruneexp.regularizers.base import Penalty, RegularizerConfig, soft_threshold


@REGULARIZERS.register("l1", config=RegularizerConfig, granularities=("weight",))
class L1(Penalty):
    def value(self, groups):
        return self.strength * self.l1(groups)

    def prox_(self, groups, step_size):
        for g in groups:
            g.weight.copy_(soft_threshold(g.weight, step_size * self.strength))
