"""`regularizer=none`: no penalty (the default; left out of the run hash). With
`schedule=regularized` it is the unregularized control: the same training, nothing thresholded."""

from pruneexp.regularizers import REGULARIZERS
from pruneexp.regularizers.base import Penalty, RegularizerConfig


@REGULARIZERS.register("none", config=RegularizerConfig, granularities=("weight", "channel", "nm", "block"))
class NoPenalty(Penalty):
    def value(self, groups):
        import torch

        return torch.zeros(())

    def prox_(self, groups, step_size):
        pass
