"""`regularizer=group_lasso` (with `prune.granularity=channel`): λ Σ_g √p_g ‖w_g‖₂ over the output
units of every prunable layer but the classifier, a unit's group being its incoming weights and
its bias (Yuan & Lin 2006; on neurons: Scardapane et al. 2017, "Group sparse regularization for
deep neural networks"; on filters and channels: Wen et al. 2016, SSL). Proximal step: the group
soft threshold w_g max(0, 1 - ηλ√p_g/‖w_g‖₂), which zeroes whole units."""

from pruneexp.regularizers import REGULARIZERS
from pruneexp.regularizers.base import Penalty, RegularizerConfig, group_soft_threshold


@REGULARIZERS.register("group_lasso", config=RegularizerConfig, granularities=("channel",))
class GroupLasso(Penalty):
    grouped = True
    elementwise = False

    def value(self, groups):
        return self.strength * self.group_norms(groups)

    def prox_(self, groups, step_size):
        for g in groups:
            if g.grouped:
                g.write_rows(group_soft_threshold(g.rows(), step_size * self.strength))
