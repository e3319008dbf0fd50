"""The oracle check of a criterion: how well its per-neuron scores rank the true loss increase of
removing each neuron (Molchanov et al. 2017/2019 validate Taylor criteria this way)."""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from pruneexp.pruning.criteria import ScoreContext, criterion_config, score, supported_granularities
from pruneexp.pruning.groups import Granularity
from pruneexp.pruning.masks import bias_name


@torch.no_grad()
def removal_loss_increase(model: nn.Module, names: list[str], batches: Any, loss_fn: Any = F.cross_entropy) -> dict[str, torch.Tensor]:
    """Oracle: L(w with unit c of layer n removed) - L(w), unit removal = its weight row and bias set
    to zero, L the mean loss over `batches()` with the model in eval mode. One forward per unit."""
    params = dict(model.named_parameters())
    was = model.training
    model.eval()

    def loss() -> float:
        values = [float(loss_fn(model(x), y)) for x, y in batches()]
        return sum(values) / len(values)

    base = loss()
    out = {}
    for n in names:
        w, b = params[n], params.get(bias_name(n))
        deltas = torch.zeros(w.shape[0], dtype=torch.float64)
        for c in range(w.shape[0]):
            saved = (w[c].clone(), None if b is None else b[c].clone())
            w[c] = 0
            if b is not None:
                b[c] = 0
            deltas[c] = loss() - base
            w[c] = saved[0]
            if b is not None:
                b[c] = saved[1]
        out[n] = deltas
    model.train(was)
    return out


def oracle_correlations(model: nn.Module, names: list[str], batches: Any, criteria: Iterable[str], seed: int = 0,
                        common: dict[str, Any] | None = None, options: dict[str, dict[str, Any]] | None = None) -> dict[str, float]:
    """Spearman rank correlation, over all units of the layers `names` together, between each
    criterion's channel scores and `removal_loss_increase` on the same batches. Each criterion is
    configured by its own schema with the `common` values and its entry in `options`."""
    oracle = torch.cat(list(removal_loss_increase(model, names, batches).values())).numpy()
    params = dict(model.named_parameters())
    out = {}
    for name in criteria:
        cfg = criterion_config(name, **(common or {}), **(options or {}).get(name, {}))
        if "channel" not in supported_granularities(name, cfg.get("variant", "")):
            continue
        chosen = {n: params[n] for n in names}
        ctx = ScoreContext(model=model, params=chosen, masks=None, batches=batches, loss_fn=F.cross_entropy,
                           cfg=cfg, seed=seed, granularity=Granularity("channel"))
        scores = score(name, ctx).scores
        gran = Granularity("channel")
        units = torch.cat([(s if s.dim() == 1 else gran.reduce(s.double(), "sum")).detach().double().cpu()
                           for s in (scores[n] for n in names)])
        out[name] = float(spearmanr(units.numpy(), oracle).statistic)
    return out
