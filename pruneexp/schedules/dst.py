"""Dynamic sparse training: SET (Mocanu et al. 2018, "Scalable training of artificial neural networks
with adaptive sparse connectivity") and RigL (Evci et al. 2020, "Rigging the Lottery").

The recipe: a sparse network from the first step (layer densities ERK, `prune.scope=erk`, or uniform,
`prune.scope=layerwise`; the connections drawn at random, `criterion=random`); every ΔT steps, in
every layer, drop a fraction α_t of the live weights and grow as many dead connections, so that
each layer's count of live weights never changes:

    α_t = α/2 (1 + cos(π t / T_end))   (decay=cosine; decay=constant: α_t = α),   updates at
    t = ΔT, 2ΔT, ... while t < T_end = end · (training steps); then the masks are fixed.
    n_drop = floor(α_t · live weights of the layer)   (RigL's reference code truncates)

- drop: the n_drop live weights of smallest |w| (RigL; with a small N(0, drop_noise²) added to
  break ties), or, SET (drop_signs=separate), floor(α_t · #positive) smallest positive weights and
  floor(α_t · #negative) largest negative weights, separately;
- grow: among the connections dead after the drop (just-dropped ones included), the n_drop of
  largest |∂L/∂w| of the dense gradient at the update step (RigL; the loop re-applies masks to
  weights, never to gradients, so masked weights have their full gradient in p.grad), or n_drop
  chosen uniformly at random (SET);
- a grown weight starts at zero (RigL) or N(0, grow_std²) (SET's reference code: 0.1), its
  optimizer state (momentum, Adam moments) reset to zero;
- the update takes the place of the step's gradient step (skip_step, RigL) or follows it (SET).

Every choice on which the two papers differ is an option whose preset is the method's own value
(`PRESETS`); null in the config means "the method's preset".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn

from pruneexp.config import ScheduleConfig
from pruneexp.errors import PruneexpError
from pruneexp.pruning.masks import MaskSet
from pruneexp.pruning.select import top_k_mask
from pruneexp.pruning.sparse_init import check_sparse_init, scale_for_density
from pruneexp.schedules import SCHEDULES
from pruneexp.schedules.context import Level, RunContext
from pruneexp.train import Sparsifier, steps_per_epoch
from pruneexp.train.durations import check as check_duration
from pruneexp.train.durations import to_steps
from pruneexp.train.sparsifier import reset_optimizer_state

METHODS = ("rigl", "set")
# each paper's value of every choice on which SET and RigL differ
PRESETS: dict[str, dict[str, Any]] = {
    "rigl": dict(grow_init="zero", skip_step=True, drop_noise=1e-5, drop_signs="joint", grow="gradient"),
    "set": dict(grow_init="normal", skip_step=False, drop_noise=0.0, drop_signs="separate", grow="random"),
}
# criteria that can draw the initial mask of an untrained network (the papers: random)
INIT_CRITERIA = ("random", "magnitude")


@dataclass
class DstConfig(ScheduleConfig):
    method: str = "rigl"  # rigl | set
    update_every: str = "100it"  # ΔT
    drop_fraction: float = 0.3  # α
    decay: str = "cosine"  # cosine (α/2 (1 + cos(π t / T_end))) | constant
    end: float = 0.75  # T_end as a fraction of the training steps; no update at or after it
    grow: Optional[str] = None  # gradient | random (null: the method's preset)
    grow_init: Optional[str] = None  # zero | normal
    grow_std: float = 0.1  # grow_init=normal: N(0, grow_std²)
    skip_step: Optional[bool] = None  # the update takes the place of the optimizer step
    drop_noise: Optional[float] = None  # std of the noise added to |w| to break drop ties
    drop_signs: Optional[str] = None  # joint (smallest |w|) | separate (SET: positive and negative apart)
    reset_optimizer: bool = True  # grown weights start with zero optimizer state
    sparse_init: str = "dense"  # dense (the model's init, masked) | layer_scaled (kept weights / sqrt(layer density))


def options(s: Any) -> dict[str, Any]:
    """The schedule's options with every null replaced by the method's preset."""
    out = dict(PRESETS[s.method])
    for key in out:
        if s.get(key) is not None:
            out[key] = s[key]
    out.update(drop_fraction=float(s.drop_fraction), decay=s.decay, end=float(s.end), grow_std=float(s.grow_std),
               reset_optimizer=bool(s.reset_optimizer))
    return out


def check(cfg: Any) -> None:
    """Refuse, before any data is loaded, what dynamic sparse training cannot do."""
    s, p = cfg.schedule, cfg.prune
    if s.method not in METHODS:
        raise PruneexpError(f"Unknown schedule.method '{s.method}'; dst knows: {', '.join(METHODS)}.")
    check_sparse_init(s.sparse_init)
    check_duration(s.update_every)
    for key, allowed in (("grow", ("gradient", "random")), ("grow_init", ("zero", "normal")),
                         ("drop_signs", ("joint", "separate")), ("decay", ("cosine", "constant"))):
        if s[key] is not None and s[key] not in allowed:
            raise PruneexpError(f"schedule.{key}={s[key]} is not one of: {', '.join(allowed)}.")
    if not 0.0 < s.drop_fraction < 1.0 or not 0.0 < s.end <= 1.0:
        raise PruneexpError(f"schedule.drop_fraction={s.drop_fraction} must be in (0, 1) and schedule.end={s.end} in (0, 1].")
    if cfg.criterion.name not in INIT_CRITERIA:
        raise PruneexpError(f"schedule=dst draws its sparse mask before any training, so criterion={cfg.criterion.name} (which "
                            f"scores a trained network or needs data through it) cannot choose it; use criterion=random (SET, "
                            f"RigL) or criterion=magnitude. Drops are always by magnitude, growth by schedule.grow.")
    if p.granularity != "weight":
        raise PruneexpError(f"schedule=dst moves single connections; prune.granularity={p.granularity} is not supported "
                            f"(an N:M, channel or block pattern is not kept by a drop/grow update): use prune.granularity=weight.")
    if p.scope not in ("erk", "layerwise"):
        raise PruneexpError(f"schedule=dst keeps each layer's density fixed: its initial distribution is prune.scope=erk "
                            f"(Evci et al. 2020) or prune.scope=layerwise (uniform), not {p.scope}.")
    if cfg.sparsity <= 0.0:
        raise PruneexpError("schedule=dst trains at a fixed sparsity from the first step: set sparsity > 0 (e.g. sparsity=0.9).")


class DynamicSparse(Sparsifier):
    """SET / RigL drop-and-grow as a training hook (see the module docstring). `history` holds one
    record per update: (step, alpha, {layer: (dropped, grown)}); `last_grown` the grown connections
    of the last update, by layer."""

    def __init__(self, opts: dict[str, Any], dt: int, t_end: int, seed: int):
        self.o, self.dt, self.t_end, self.seed = opts, dt, t_end, seed
        self.history: list[tuple[int, float, dict[str, tuple[int, int]]]] = []
        self.last_grown: dict[str, Tensor] = {}
        self._pending: dict[str, Tensor] | None = None

    def alpha(self, t: int) -> float:
        a = self.o["drop_fraction"]
        return a / 2 * (1 + math.cos(math.pi * t / self.t_end)) if self.o["decay"] == "cosine" else a

    def is_update(self, step: int) -> bool:
        return step > 0 and step % self.dt == 0 and step < self.t_end

    def _generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + step)  # a function of (seed, step): resumable

    def before_step(self, model: nn.Module, step: int, masks: MaskSet, optimizer: torch.optim.Optimizer) -> bool:
        if not self.is_update(step):
            return False
        params = dict(model.named_parameters())
        gen = self._generator(step)
        scores = {}
        for name in masks.weights:
            p = params[name]
            if self.o["grow"] == "gradient":  # the dense gradient of this step (masked weights included)
                scores[name] = (p.grad.detach().abs().clone() if p.grad is not None else torch.zeros_like(p)).double()
            else:
                scores[name] = torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.device)
        if self.o["skip_step"]:
            self.update(model, step, masks, optimizer, scores)
            return True
        self._pending = scores
        return False

    def after_step(self, model: nn.Module, step: int, masks: MaskSet, optimizer: torch.optim.Optimizer) -> None:
        if self._pending is not None:
            scores, self._pending = self._pending, None
            self.update(model, step, masks, optimizer, scores)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, masks: MaskSet, optimizer: torch.optim.Optimizer,
               grow_scores: dict[str, Tensor]) -> None:
        a = self.alpha(step)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 7_919)
        params = dict(model.named_parameters())
        counts: dict[str, tuple[int, int]] = {}
        for name in masks.weights:
            w, m = params[name], masks[name]
            flat_w, live = w.detach().flatten().double(), m.flatten()
            if self.o["drop_signs"] == "separate":  # SET: the smallest positive and the largest negative apart
                pos, neg = live & (flat_w >= 0), live & (flat_w < 0)
                drop = (top_k_mask(torch.where(pos, -flat_w, -math.inf), int(a * int(pos.sum())))
                        | top_k_mask(torch.where(neg, flat_w, -math.inf), int(a * int(neg.sum()))))
            else:
                mag = flat_w.abs()
                if self.o["drop_noise"] > 0:
                    mag = mag + self.o["drop_noise"] * torch.randn(mag.shape, generator=gen, dtype=torch.float64).to(mag.device)
                drop = top_k_mask(torch.where(live, -mag, -math.inf), int(a * int(live.sum())))
            n = int(drop.sum())
            if n == 0:
                counts[name] = (0, 0)
                continue
            after_drop = live & ~drop
            score = grow_scores[name].flatten().to(after_drop.device)
            grown = top_k_mask(torch.where(after_drop, -math.inf, score), n)
            value = (torch.zeros(n, dtype=w.dtype) if self.o["grow_init"] == "zero"
                     else self.o["grow_std"] * torch.randn(n, generator=gen, dtype=w.dtype))
            # boolean indexing in w's logical order: the same entries as w.view(-1)[...], for any strides (channels-last)
            w[grown.view(w.shape)] = value.to(w.device)
            w[(drop & ~grown).view(w.shape)] = 0.0
            grown = grown.view_as(m)
            if self.o["reset_optimizer"]:
                reset_optimizer_state(optimizer, w, grown)
            masks.set_(name, (after_drop.view_as(m)) | grown)
            self.last_grown[name] = grown.clone()
            counts[name] = (n, int(grown.sum()))
        self.history.append((step, a, counts))

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(step=s, alpha=a, counts={k: list(v) for k, v in c.items()}) for s, a, c in self.history],
                "last_grown": {k: v.cpu() for k, v in self.last_grown.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(h["step"], h["alpha"], {k: tuple(v) for k, v in h["counts"].items()}) for h in state["history"]]
        self.last_grown = dict(state["last_grown"])

    def log(self) -> dict[str, Any]:
        if not self.history:
            return dict(dst_updates=0, dst_alpha=float("nan"), dst_moved=0)
        step, a, counts = self.history[-1]
        return dict(dst_updates=len(self.history), dst_alpha=round(a, 6), dst_moved=sum(d for d, _ in counts.values()))


@SCHEDULES.register("dst", check=check, config=DstConfig)
def dst(ctx: RunContext) -> Iterator[Level]:
    """Dynamic sparse training (`schedule.method=set|rigl`). Levels: 0 the sparse network at
    initialisation (its masks drawn by the criterion under `prune.scope`), 1 trained for
    `train.duration` with drop/grow updates every `update_every` until `end` of training (one
    `train()` call, one optimizer); its metrics carry the update count and the live architecture."""
    opts = options(ctx.cfg.schedule)
    train_cfg = ctx.train_cfg()
    spe = steps_per_epoch(ctx.data, train_cfg.batch_size)
    total = to_steps(train_cfg.duration, spe)
    dt = to_steps(ctx.cfg.schedule.update_every, spe)
    if dt < 1:
        raise PruneexpError(f"schedule.update_every={ctx.cfg.schedule.update_every} must be at least one step.")
    model = ctx.build_model()
    dense = ctx.dense_masks(model)
    init = ctx.level(0, "init", model, dense,
                     lambda: (scale_for_density(model, ctx.prune(model, dense, ctx.cfg.sparsity), ctx.cfg.schedule.sparse_init), None))
    yield init
    hook = DynamicSparse(opts, dt, max(1, round(opts["end"] * total)), ctx.cfg.seed)
    masks = init.masks.clone()

    def run():
        return masks, ctx.train(model, masks, train_cfg, ctx.cfg.schedule.method, 1, sparsifier=hook)

    trained = ctx.level(1, "trained", model, masks, run)
    if not trained.restored:
        trained.metrics.update(dst_updates=len(hook.history))
    yield ctx.with_live_units(trained)
