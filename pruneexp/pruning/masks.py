"""MaskSet: boolean keep-masks keyed by parameter name, and the choice of what is prunable.

A mask entry is True where the parameter is kept. The weights named in `MaskSet.weights` are the
prunable ones that sparsity is reported over; a MaskSet may also hold masks for other parameters
(a pruned channel's bias, the BatchNorm scale and shift that follow it) so that a masked model
and its physically shrunk twin compute the same function.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import Tensor, nn

from pruneexp.errors import PruneexpError

LAYER_TYPES: dict[str, tuple[type[nn.Module], ...]] = {
    "linear": (nn.Linear, nn.MultiheadAttention),  # attention's packed Q/K/V projection is a linear map
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
    "embedding": (nn.Embedding,),  # not pruned by default (and a tied LM head is this same weight)
}
# The weight parameters of each layer type, by the name the module registers them under.
WEIGHT_NAMES: dict[type[nn.Module], tuple[str, ...]] = {
    nn.MultiheadAttention: ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"),
}


def layer_name(param: str) -> str:
    """The layer a weight belongs to, as users write it in rules: "fc1.weight" -> "fc1",
    "attn.in_proj_weight" -> "attn.in_proj", a root-level "weight" -> ""."""
    return param.removesuffix("weight").rstrip("._")


def bias_name(param: str) -> str:
    """The bias that goes with a weight: "fc1.weight" -> "fc1.bias", "attn.in_proj_weight" ->
    "attn.in_proj_bias", "weight" -> "bias"."""
    return param.removesuffix("weight") + "bias"


def owner_name(param: str) -> str:
    """The module that registers parameter `param`: "fc1.weight" -> "fc1", "weight" -> "" (the root)."""
    return param.rpartition(".")[0]


def layer_weights(model: nn.Module, layer_types: Iterable[str] = ("linear", "conv")) -> dict[str, nn.Parameter]:
    """Weights of every layer of the given types, in parameter (= definition, forward) order, keyed
    by parameter name. Found by parameter, not by module: nn.MultiheadAttention's packed
    `in_proj_weight` is found beside its `out_proj`, and a weight shared by two modules (a language
    model's head tied to its embedding) is listed once, under its first name and owner's type."""
    unknown = set(layer_types) - set(LAYER_TYPES)
    if unknown:
        raise PruneexpError(f"Unknown prune.layer_types {sorted(unknown)}; known: {sorted(LAYER_TYPES)}.")
    types = tuple(t for name in layer_types for t in LAYER_TYPES[name])
    modules = dict(model.named_modules())
    found: dict[str, nn.Parameter] = {}
    for name, param in model.named_parameters():  # shared parameters appear once
        owner = modules[owner_name(name)]
        leaf = name.rpartition(".")[2]
        if isinstance(owner, types) and leaf in WEIGHT_NAMES.get(type(owner), ("weight",)) and param.dim() >= 2:
            found[name] = param
    return found


def match_layers(names: list[str], pattern: str) -> list[str]:
    """Parameter names matched by a layer rule: a glob over names, or `@first` / `@last` in module order."""
    if pattern == "@first":
        return names[:1]
    if pattern == "@last":
        return names[-1:]
    return [n for n in names if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(layer_name(n), pattern)]


def output_layer(model: nn.Module, num_classes: int, layer_types: Iterable[str] = ("linear", "conv")) -> str | None:
    """The weight of the layer that produces the model's outputs: the last linear weight (in
    definition order) with `num_classes` outputs, or None when there is none among the layer
    weights (e.g. a language model whose head is tied to its embedding)."""
    hits = [n for n, w in layer_weights(model, layer_types).items() if w.dim() == 2 and w.shape[0] == num_classes]
    return hits[-1] if hits else None


def prunable_weights(
    model: nn.Module, layer_types: Iterable[str] = ("linear", "conv"), exclude: Iterable[str] = ()
) -> dict[str, nn.Parameter]:
    """The weights a run prunes: conv/linear weights (never biases or norms), minus excluded layers."""
    weights = layer_weights(model, layer_types)
    names = list(weights)
    excluded: set[str] = set()
    for pattern in exclude:
        hit = match_layers(names, pattern)
        if not hit:
            raise PruneexpError(f"prune.exclude pattern '{pattern}' matches no prunable layer; layers are: {', '.join(names)}.")
        excluded.update(hit)
    kept = {n: p for n, p in weights.items() if n not in excluded}
    if not kept:
        raise PruneexpError("prune.exclude leaves no layer to prune.")
    return kept


@dataclass
class SparsityReport:
    """Exact counts: over the prunable weights, and over every parameter of the model."""

    prunable: int  # number of prunable weights
    prunable_nonzero: int
    total: int  # every parameter of the model
    total_nonzero: int  # total minus masked-out entries (of any masked parameter)
    layers: dict[str, tuple[int, int]]  # prunable weight name -> (numel, kept)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.prunable_nonzero / self.prunable

    @property
    def sparsity_all(self) -> float:
        return 1.0 - self.total_nonzero / self.total


class MaskSet:
    """Keep-masks (bool tensors) keyed by parameter name; `weights` are the prunable ones."""

    def __init__(self, masks: Mapping[str, Tensor], weights: Iterable[str] | None = None):
        self.masks: dict[str, Tensor] = {k: v.bool() for k, v in masks.items()}
        self.weights: tuple[str, ...] = tuple(self.masks if weights is None else weights)
        self.version = 0  # bumped by every edit through `set_`, so appliers know to refresh
        missing = [w for w in self.weights if w not in self.masks]
        if missing:
            raise ValueError(f"weights without a mask: {missing}")

    @classmethod
    def dense(cls, params: Mapping[str, Tensor]) -> "MaskSet":
        """All-True masks for the given (prunable) parameters."""
        return cls({n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()})

    def __getitem__(self, name: str) -> Tensor:
        return self.masks[name]

    def __contains__(self, name: object) -> bool:
        return name in self.masks

    def set_(self, name: str, mask: Tensor) -> None:
        """Replace the mask of `name` in place (e.g. a drop/grow update during training); the
        training loop's applier picks the change up at its next call."""
        self.masks[name].copy_(mask.to(self.masks[name].device).bool())
        self.version += 1

    def update_(self, other: "MaskSet") -> None:
        """Take every mask of `other` in place (adding masks it has and this one lacks, e.g. a
        pruned unit's bias and BatchNorm), as one edit the loop's applier picks up."""
        for name, mask in other.masks.items():
            if name in self.masks:
                self.masks[name].copy_(mask.to(self.masks[name].device))
            else:
                self.masks[name] = mask.clone()
        self.version += 1

    def clone(self) -> "MaskSet":
        return MaskSet({k: v.clone() for k, v in self.masks.items()}, self.weights)

    def to(self, device: torch.device | str) -> "MaskSet":
        return MaskSet({k: v.to(device) for k, v in self.masks.items()}, self.weights)

    @torch.no_grad()
    def apply_(self, model: nn.Module, skip: Iterable[str] = ()) -> None:
        """Zero every masked-out entry of the model's parameters, in place; the masks named in `skip`
        are left out (a prune step's frozen layers: their masks, unchanged, are applied already)."""
        params = dict(model.named_parameters())
        skip = set(skip)
        for name, mask in self.masks.items():
            if name in skip:
                continue
            params[name].mul_(mask.to(params[name].device))  # a no-op move unless the layer was offloaded

    def binder(self, model: nn.Module, skip_dense: bool = True) -> "MaskApplier":
        """A fast re-applier for the training loop's hot path (one fused multiply per step).
        `skip_dense=False` also covers masks that keep everything now (they may lose entries later)."""
        return MaskApplier(model, self, skip_dense)

    def report(self, model: nn.Module) -> SparsityReport:
        layers = {w: (self.masks[w].numel(), int(self.masks[w].sum())) for w in self.weights}
        masked_out = sum(int((~m).sum()) for m in self.masks.values())
        total = sum(p.numel() for p in model.parameters())
        return SparsityReport(
            prunable=sum(n for n, _ in layers.values()),
            prunable_nonzero=sum(k for _, k in layers.values()),
            total=total,
            total_nonzero=total - masked_out,
            layers=layers,
        )

    def state_dict(self) -> dict:
        return {"masks": {k: v.cpu() for k, v in self.masks.items()}, "weights": list(self.weights)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "MaskSet":
        return cls(state["masks"], state["weights"])

    def equal(self, other: "MaskSet") -> bool:
        return self.weights == other.weights and self.masks.keys() == other.masks.keys() and all(
            torch.equal(self.masks[k].cpu(), other.masks[k].cpu()) for k in self.masks
        )


class MaskApplier:
    """Re-applies a MaskSet after each optimizer step with one `torch._foreach_mul_` call, so a pruned
    weight stays exactly zero under momentum, Adam or weight decay, without forward hooks.

    The factors are float copies of the masks (a multiply by a bool tensor is about 5x slower on
    CPU); they are rebuilt whenever the MaskSet's `version` moved, i.e. after `MaskSet.set_`."""

    def __init__(self, model: nn.Module, masks: MaskSet, skip_dense: bool = True):
        self.model, self.masks, self.skip_dense = model, masks, skip_dense
        self.refresh()

    def refresh(self) -> None:
        params = dict(self.model.named_parameters())
        names = [n for n, m in self.masks.masks.items() if not (self.skip_dense and bool(m.all()))]
        self.params = [params[n] for n in names]
        self.factors = [self.masks[n].to(device=params[n].device, dtype=params[n].dtype) for n in names]
        self.version = self.masks.version

    @torch.no_grad()
    def __call__(self) -> None:
        if self.version != self.masks.version:
            self.refresh()
        if self.params:
            torch._foreach_mul_(self.params, self.factors)


def _unit_chain(model: nn.Module, masks: MaskSet) -> tuple[list[Tensor], list[int]] | None:
    """The masks' layers read as a chain of units: per layer its [out, in] connectivity (a conv's
    kernel positions folded in) and how many of its input features each unit of the layer before
    feeds (1, or H·W where a linear layer reads a conv's C channels flattened channel-major: NCHW
    .flatten(1) gives C blocks of H·W features, so a channel is live to an output if any of its H·W
    features is). None where the layers are not such a chain (residual nets, attention)."""
    params = dict(model.named_parameters())
    names = list(masks.weights)
    shapes = [params[n].shape for n in names]
    if not names or any(len(s) not in (2, 4) for s in shapes):
        return None
    conn, fold = [], []
    for i, n in enumerate(names):
        m, fan_in = masks[n], shapes[i][1]
        prev = shapes[i - 1][0] if i else fan_in
        if len(shapes[i]) == 2 and fan_in != prev:
            if i == 0 or len(shapes[i - 1]) != 4 or fan_in % prev:
                return None
            conn.append(m.reshape(m.shape[0], prev, -1).any(-1))
            fold.append(fan_in // prev)
        elif fan_in != prev:
            return None
        else:
            conn.append(m.reshape(m.shape[0], fan_in, -1).any(-1))
            fold.append(1)
    # shapes that line up are necessary, not enough (a residual MLP's do): the graph decides, traced last as it costs most
    return (conn, fold) if _traced_chain(model, names) else None


def _traced_chain(model: nn.Module, names: list[str]) -> bool:
    """Whether the layers owning `names` form a chain on the model's traced graph (torch.fx): the
    input reaches the first, each layer's output reaches only the next, and the last's reaches the
    output, through nodes that take one tensor (activations, pooling, flatten, norms, dropout; a
    size or shape query beside it does not count). Shapes that line up are not enough: a residual
    MLP's hidden layers line up, but a unit with no live input still carries its skip connection.
    False where the model does not trace."""
    from torch import fx

    from pruneexp.pruning.graph import traced_graph

    graph = traced_graph(model)
    if graph is None:  # a model fx cannot trace is not known to be a chain
        return False

    def shape_only(node: fx.Node) -> bool:  # x.size(0), x.shape and arithmetic on them: no tensor data
        if node.op == "call_method" and node.target in ("size", "dim"):
            return True
        if node.op == "call_function" and node.target is getattr:
            return node.args[1] in ("shape", "ndim")
        data = node.all_input_nodes
        return node.op in ("call_function", "call_method") and bool(data) and all(shape_only(a) for a in data)

    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return False
    layers = [owner_name(n) for n in names]
    node = inputs[0]
    for target in [*layers, None]:
        while True:
            users = [u for u in node.users if not shape_only(u)]
            if len(users) != 1:
                return False
            node = users[0]
            if sum(1 for a in node.all_input_nodes if not shape_only(a)) > 1:
                return False  # a second tensor joins: a skip connection, a concatenation, a parameter
            if node.op == "output":
                return target is None
            if node.op == "call_module" and node.target in layers:
                if node.target != target:
                    return False
                break
    return False  # not reached: the walk ends at the output node


def alive_units(model: nn.Module, masks: MaskSet) -> list[Tensor] | None:
    """Which units of the chain survive, as `shrink` removes them: [inputs, layer 1's outputs, ...,
    the last layer's outputs] as bool vectors. A hidden unit (an output of one prunable layer, an
    input of the next) with no live input from a live unit or no live output to a live unit is gone,
    repeated until nothing changes; an input feature is live if it reaches a live unit; the last
    layer's outputs always are. None where the layers are not a chain (see _unit_chain)."""
    chain = _unit_chain(model, masks)
    return None if chain is None else _alive(chain[0])


def _alive(conn: list[Tensor]) -> list[Tensor]:
    """alive_units' fixpoint over the chain's [out, in] connectivities. A unit's live inputs are
    counted by a matrix-vector product of the 0/1 connectivity with the live units before it
    (C_in @ a_prev > 0; its live outputs by a_next @ C_out > 0): one pass over each matrix, where
    gathering the live columns copied it (a level row of LeNet-300-100: 3 -> 0.5 ms). The counts
    are sums of ones, exact in float32 up to 2^24 inputs."""
    w = [c.to(torch.float32) for c in conn]
    alive = [conn[0].any(0)] + [torch.ones(c.shape[0], dtype=torch.bool, device=conn[0].device) for c in conn]
    while True:
        changed = False
        for i in range(1, len(alive) - 1):  # hidden units: live input from a live unit, live output to a live unit
            new = alive[i] & (w[i - 1] @ alive[i - 1].to(torch.float32) > 0) & (alive[i + 1].to(torch.float32) @ w[i] > 0)
            if not torch.equal(new, alive[i]):
                alive[i], changed = new, True
        inputs = alive[0] & (alive[1].to(torch.float32) @ w[0] > 0)
        if not torch.equal(inputs, alive[0]):
            alive[0], changed = inputs, True
        if not changed:
            return alive


def live_units(model: nn.Module, masks: MaskSet) -> str:
    """The architecture left after training, counted the way `shrink` removes units (alive_units):
    for a chain of linear/conv layers (LeNet-300-100: "i-h1-h2-o", inputs counted by live input
    features; LeNet-5: "in channels-c1-c2-f1-f2-out", a conv channel feeding a linear layer through
    a flatten counted as one unit); '' for other shapes."""
    alive = alive_units(model, masks)
    return "" if alive is None else "-".join(str(int(a.sum())) for a in alive)


def effective_masks(model: nn.Module, masks: MaskSet) -> MaskSet | None:
    """The masks without the weights that lie on no input-to-output path: a kept weight w_ji counts
    only if both its input unit i and its output unit j are alive (alive_units), i.e.
    M_eff[j, i] = M[j, i] ∧ alive_in[i] ∧ alive_out[j] (a conv's kernel positions and a flattened
    channel's H·W features share their channel's liveness). The "effective sparsity" of Vysogorets
    & Kempe, "Connectivity Matters: Neural Network Pruning Through the Lens of Effective Sparsity"
    (JMLR 2023): removing units leaves the next layer's columns that read them in the mask, so the
    direct count understates structured sparsity, and at extreme unstructured sparsity whole units
    disconnect. None where the layers are not a chain."""
    chain = _unit_chain(model, masks)
    if chain is None:
        return None
    alive, fold = _alive(chain[0]), chain[1]
    out = {}
    for i, name in enumerate(masks.weights):
        m = masks[name]
        rows = alive[i + 1].view(-1, *([1] * (m.dim() - 1)))
        cols = alive[i].repeat_interleave(fold[i]).view(1, -1, *([1] * (m.dim() - 2)))
        out[name] = m & rows & cols
    return MaskSet(out, list(masks.weights))


def with_dense_rest(model: nn.Module, masks: MaskSet, layer_types: Iterable[str] = ("linear", "conv")) -> MaskSet:
    """`masks` over every layer of `layer_types`, the layers it leaves unmasked (`prune.exclude`,
    e.g. an unpruned classifier) counted whole: the chain that alive_units and effective_masks read."""
    every = layer_weights(model, layer_types)
    return MaskSet({n: masks[n] if n in masks.weights else torch.ones_like(p, dtype=torch.bool) for n, p in every.items()})


def effective_chain(model: nn.Module, masks: MaskSet, layer_types: Iterable[str] = ("linear", "conv")) -> MaskSet | None:
    """effective_masks over the whole chain of `layer_types` layers, the ones `masks` leaves
    unmasked counted whole (with_dense_rest): a mask for every layer weight, the unpruned layers'
    included (an excluded classifier's columns that read removed units are off every path too).
    None where the layers are not a chain or `masks` prunes a layer outside it."""
    full = with_dense_rest(model, masks, layer_types)
    if any(w not in full.masks for w in masks.weights):
        return None
    return effective_masks(model, full)


def effective_counts(model: nn.Module, masks: MaskSet, layer_types: Iterable[str] = ("linear", "conv")) -> dict[str, int] | None:
    """Per prunable weight of `masks`, how many kept entries lie on an input-to-output path
    (effective_chain); None where the layers are not a chain or `masks` prunes a layer outside it."""
    eff = effective_chain(model, masks, layer_types)
    return None if eff is None else {w: int(eff[w].sum()) for w in masks.weights}

