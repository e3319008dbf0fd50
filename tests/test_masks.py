"""MaskSet, prunable weights, sparsity counts and FLOPs on small models with known answers."""

import pytest
import torch
from torch import nn

from pruneexp.errors import PruneexpError
from pruneexp.measure import count_layer_flops, masked_flops
from pruneexp.pruning.masks import MaskSet, prunable_weights


def small_net():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10), nn.ReLU(), nn.Linear(10, 3))


def test_prunable_weights_are_conv_and_linear_weights_only():
    params = prunable_weights(small_net())
    assert list(params) == ["0.weight", "4.weight", "6.weight"]
    assert list(prunable_weights(small_net(), exclude=["@first"])) == ["4.weight", "6.weight"]
    assert list(prunable_weights(small_net(), exclude=["@last", "0"])) == ["4.weight"]
    assert list(prunable_weights(small_net(), layer_types=["linear"])) == ["4.weight", "6.weight"]
    with pytest.raises(PruneexpError, match="matches no prunable layer"):
        prunable_weights(small_net(), exclude=["fc*"])
    with pytest.raises(PruneexpError, match="no layer to prune"):
        prunable_weights(small_net(), exclude=["*"])


def test_report_counts_exactly():
    model = small_net()
    masks = MaskSet.dense(prunable_weights(model))
    masks.masks["6.weight"][:, :5] = False  # 15 of 30 pruned
    masks.masks["0.weight"][0] = False  # 9 of 36 pruned
    rep = masks.report(model)
    assert rep.prunable == 36 + 1440 + 30
    assert rep.prunable_nonzero == rep.prunable - 24
    assert rep.layers["6.weight"] == (30, 15)
    total = sum(p.numel() for p in model.parameters())
    assert rep.total == total and rep.total_nonzero == total - 24
    assert rep.sparsity == pytest.approx(24 / 1506)


def test_apply_and_binder_zero_exactly_the_masked_entries():
    model = small_net()
    masks = MaskSet.dense(prunable_weights(model))
    masks.masks["4.weight"][3, ::2] = False
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    masks.binder(model)()
    w = model[4].weight
    assert (w[3, ::2] == 0).all() and (w[3, 1::2] == 1).all() and int((w == 0).sum()) == 72


def test_state_dict_round_trip():
    masks = MaskSet.dense(prunable_weights(small_net()))
    masks.masks["0.weight"][1] = False
    again = MaskSet.from_state_dict(masks.state_dict())
    assert again.equal(masks) and again.weights == masks.weights


def test_flops_dense_and_masked():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    masks = MaskSet.dense(prunable_weights(model))
    flops = count_layer_flops(model, (1, 8, 8), list(masks.weights))
    assert flops.per_weight == {"1.weight": 2 * 64 * 300, "3.weight": 2 * 300 * 100, "5.weight": 2 * 100 * 10}
    assert flops.total == sum(flops.per_weight.values())
    masks.masks["1.weight"][:, :32] = False  # half of layer 1
    assert masked_flops(flops, masks) == flops.total - 64 * 300


def test_prunable_weights_are_found_by_parameter():
    """nn.MultiheadAttention's packed Q/K/V weight is prunable beside out_proj; a weight shared by an
    embedding and a tied head is listed once (under the embedding, which is not pruned by default)."""
    from pruneexp.pruning.masks import layer_name, layer_weights, output_layer

    enc = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16)
    assert list(prunable_weights(enc)) == ["self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight", "linear2.weight"]

    class TiedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(11, 8)
            self.mlp = nn.Linear(8, 8)
            self.head = nn.Linear(8, 11, bias=False)
            self.head.weight = self.wte.weight

    lm = TiedLM()
    assert list(prunable_weights(lm)) == ["mlp.weight"]
    assert list(layer_weights(lm, ["linear", "embedding"])) == ["wte.weight", "mlp.weight"]
    assert output_layer(lm, 11) is None  # the head is the embedding: no classifier to keep whole
    assert output_layer(nn.Sequential(nn.Linear(4, 10), nn.Linear(10, 3)), 3) == "1.weight"
    assert list(prunable_weights(nn.Linear(3, 2))) == ["weight"]  # a root-level weight
    assert [layer_name(n) for n in ("fc1.weight", "attn.in_proj_weight", "weight")] == ["fc1", "attn.in_proj", ""]
    assert list(prunable_weights(enc, exclude=["self_attn.in_proj"])) == ["self_attn.out_proj.weight", "linear1.weight", "linear2.weight"]


def test_a_mask_edit_reaches_the_applier():
    model = nn.Linear(4, 3)
    masks = MaskSet.dense(prunable_weights(model))
    apply = masks.binder(model, skip_dense=False)
    edited = masks["weight"].clone()
    edited[0, 0] = False
    masks.set_("weight", edited)
    apply()
    assert model.weight[0, 0] == 0 and (model.weight[masks["weight"]] != 0).all()


def test_effective_masks_drop_weights_on_no_input_to_output_path():
    """4-3-2 MLP: hidden 1 has no input, hidden 2 no output. Kept: 3 + 2 = 5 of 18 weights; on a
    path: 0.weight's row 0 (2 weights; row 2's weight reads input 1 but hidden 2 feeds nothing) and
    2.weight's [0, 0] (its [0, 1] reads hidden 1, which has no input): 3 of 18, effective sparsity
    5/6 (Vysogorets & Kempe 2023)."""
    from pruneexp.pruning.masks import effective_counts, effective_masks

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    m1 = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
    m2 = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    eff = effective_masks(model, MaskSet({"0.weight": m1, "2.weight": m2}))
    assert eff["0.weight"].tolist() == [[True, True, False, False], [False] * 4, [False] * 4]
    assert eff["2.weight"].tolist() == [[True, False, False], [False] * 3]
    assert effective_counts(model, MaskSet({"0.weight": m1, "2.weight": m2})) == {"0.weight": 2, "2.weight": 1}
    # a dense network, and one whose every unit keeps a path, lose nothing
    dense = MaskSet.dense(prunable_weights(model))
    assert effective_counts(model, dense) == {"0.weight": 12, "2.weight": 6}
    # the classifier excluded from pruning counts whole: hidden 2's row reaches an output through it
    assert effective_counts(model, MaskSet({"0.weight": m1})) == {"0.weight": 3}


def test_effective_masks_of_removed_channels_through_a_flatten():
    """conv 1->3 (2x2 kernels on 3x3 inputs: 2x2 maps), flatten to 12 features, linear 12->2.
    Channel 1 pruned as a unit (its kernel all zero): the linear layer's 2 x 4 weights that read it
    still count as kept in the mask but lie on no path; channel 0 keeps its kernel, but the 2 x 4
    weights that read it are pruned, so its kernel is cut off too. Kept 8 + 16, effective 4 + 8."""
    from pruneexp.pruning.masks import effective_counts

    model = nn.Sequential(nn.Conv2d(1, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    conv = torch.ones(3, 1, 2, 2, dtype=torch.bool)
    conv[1] = False
    fc = torch.ones(2, 12, dtype=torch.bool)
    fc[:, 0:4] = False
    masks = MaskSet({"0.weight": conv, "3.weight": fc})
    assert (int(conv.sum()), int(fc.sum())) == (8, 16)
    assert effective_counts(model, masks) == {"0.weight": 4, "3.weight": 8}
    # a residual or attention network is not a chain: no count rather than a wrong one
    odd = nn.Sequential(nn.Conv2d(1, 5, 2), nn.Flatten(), nn.Linear(12, 2))
    assert effective_counts(odd, MaskSet.dense(prunable_weights(odd))) is None


def test_chains_are_read_from_the_traced_graph_not_from_shapes():
    """A residual MLP's layers line up like a chain, but a hidden unit with no live input still
    passes its skip connection on: no unit count and no effective count for it, rather than wrong
    ones. Conv nets with pruneexp's channels-last MaxPool2d trace (it is kept whole as a leaf)."""
    from pruneexp.models import create_model
    from pruneexp.pruning.channels import following_batchnorm
    from pruneexp.pruning.graph import traced_graph
    from pruneexp.pruning.masks import effective_counts, live_units

    residual = create_model("residual_mlp", (1, 8, 8), 10, widths=[16, 16])
    dense = MaskSet.dense(prunable_weights(residual))
    assert traced_graph(residual) is not None
    assert live_units(residual, dense) == "" and effective_counts(residual, dense) is None
    lenet5 = create_model("lenet5", (1, 28, 28), 10)
    assert live_units(lenet5, MaskSet.dense(prunable_weights(lenet5))) == "1-6-16-120-84-10"
    vgg = create_model("vgg11", (3, 32, 32), 10)
    assert traced_graph(vgg) is not None and len(following_batchnorm(vgg)) == 8  # one BatchNorm after each conv


def test_traced_graph_is_cached_per_model_and_retraced_when_its_modules_change(monkeypatch):
    """Level records ask for the traced graph on every level (gmp and dst write many): it is
    traced once per model structure. A sparsifier that swaps layers (sparse VD wraps them for
    training and folds them back), a changed parameter shape, a train/eval switch and another
    model each get their own trace, never a stale graph."""
    from omegaconf import OmegaConf

    from pruneexp.pruning import graph as graph_mod
    from pruneexp.pruning.masks import effective_counts
    from pruneexp.regularizers.sparse_vd import SparseVD, SparseVDConfig

    traces = []
    trace = graph_mod.LayerTracer.trace
    monkeypatch.setattr(graph_mod.LayerTracer, "trace", lambda self, root, *a, **k: traces.append(root) or trace(self, root, *a, **k))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    m1 = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
    m2 = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    masks = MaskSet({"0.weight": m1, "2.weight": m2})
    first = graph_mod.traced_graph(model)
    for _ in range(3):  # the level rows of three levels: one trace
        assert effective_counts(model, masks) == {"0.weight": 2, "2.weight": 1}
    assert len(traces) == 1 and graph_mod.traced_graph(model) is first

    # sparse VD swaps the layers for its own: re-traced, and the wrapped model is no plain chain
    svd = SparseVD(OmegaConf.structured(SparseVDConfig(name="sparse_vd")))
    prunable = prunable_weights(model)
    svd.wrap(model, prunable, n_train=100)
    wrapped = graph_mod.traced_graph(model)
    assert len(traces) == 2 and wrapped is not first
    assert {n.target for n in wrapped.nodes if n.op == "call_module"} != {n.target for n in first.nodes if n.op == "call_module"}
    # folded back to plain layers (new module objects): traced again, the same counts as before
    svd.fold(model, MaskSet.dense(prunable))
    assert effective_counts(model, masks) == {"0.weight": 2, "2.weight": 1}
    assert len(traces) == 3
    assert effective_counts(model, masks) == {"0.weight": 2, "2.weight": 1} and len(traces) == 3

    model.eval()  # a forward may branch on self.training
    graph_mod.traced_graph(model)
    assert len(traces) == 4
    model[2] = nn.Linear(3, 5)  # another layer at the same name
    wider = MaskSet({"0.weight": m1, "2.weight": torch.ones(5, 3, dtype=torch.bool)})
    assert effective_counts(model, wider) == {"0.weight": 3, "2.weight": 10} and len(traces) == 5

    twin = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))  # same structure, another model
    graph_mod.traced_graph(twin)
    assert len(traces) == 6 and traces[-1] is twin
