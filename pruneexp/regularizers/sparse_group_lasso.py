"""`regularizer=sparse_group_lasso` (with `prune.granularity=channel`): λ (α Σ|w| + (1-α) Σ_g √p_g
‖w_g‖₂), α = `l1_ratio` (Simon, Friedman, Hastie & Tibshirani 2013; on networks Scardapane et al.
2017): whole units and single weights inside the kept units go to zero. The L1 term covers every
prunable weight (the classifier's too), the group term every unit but the classifier's. Proximal
step (exact, Simon et al. 2013): the group soft threshold (t = ηλ(1-α)) of the soft threshold
S_{ηλα}(w). Biases are in the groups, not in the L1 term."""

from pruneexp.regularizers import REGULARIZERS
from pruneexp.regularizers.base import MixedConfig, Penalty, group_soft_threshold, soft_threshold


@REGULARIZERS.register("sparse_group_lasso", config=MixedConfig, granularities=("channel",))
class SparseGroupLasso(Penalty):
    grouped = True
    elementwise = True

    def value(self, groups):
        a = self.l1_ratio
        return self.strength * (a * self.l1(groups) + (1 - a) * self.group_norms(groups))

    def prox_(self, groups, step_size):
        t, a = step_size * self.strength, self.l1_ratio
        for g in groups:
            g.weight.copy_(soft_threshold(g.weight, t * a))
            if g.grouped:
                g.write_rows(group_soft_threshold(g.rows(), t * (1 - a)))
