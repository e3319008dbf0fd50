"""Magnitude criteria."""

from __future__ import annotations

from pruneexp.pruning.criteria import ScoreContext, Scores, register_criterion


@register_criterion("magnitude", granularities=("weight",))
def magnitude(ctx: ScoreContext) -> Scores:
    """s_q = |w_q|  (Han et al. 2015, "Learning both Weights and Connections for Efficient Neural
    Networks"; the criterion of the lottery-ticket experiments, Frankle & Carbin 2019)."""
    return {name: p.detach().abs() for name, p in ctx.params.items()}
