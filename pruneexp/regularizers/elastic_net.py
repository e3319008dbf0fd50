"""`regularizer=elastic_net`: λ (α Σ|w| + (1-α)/2 Σ w²) (Zou & Hastie 2005), α = `l1_ratio`.
Proximal step: S_{ηλα}(w) / (1 + ηλ(1-α))."""

from pruneexp.regularizers import REGULARIZERS
from pruneexp.regularizers.base import MixedConfig, Penalty, soft_threshold


@REGULARIZERS.register("elastic_net", config=MixedConfig, granularities=("weight",))
class ElasticNet(Penalty):
    def value(self, groups):
        a = self.l1_ratio
        return self.strength * (a * self.l1(groups) + 0.5 * (1 - a) * self.sq(groups))

    def prox_(self, groups, step_size):
        t, a = step_size * self.strength, self.l1_ratio
        for g in groups:
            g.weight.copy_(soft_threshold(g.weight, t * a) / (1.0 + t * (1 - a)))
