"""`regularizer=l2`: λ/2 Σ w² (weight decay as a penalty; shrinks, never zeroes: with it the end
threshold decides everything). Proximal step: w / (1 + ηλ)."""

from pruneexp.regularizers import REGULARIZERS
from pruneexp.regularizers.base import Penalty, RegularizerConfig


@REGULARIZERS.register("l2", config=RegularizerConfig, granularities=("weight",))
class L2(Penalty):
    def value(self, groups):
        return 0.5 * self.strength * self.sq(groups)

    def prox_(self, groups, step_size):
        for g in groups:
            g.weight.div_(1.0 + step_size * self.strength)
