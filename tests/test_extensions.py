"""The three entries added as one file plus one YAML each (issue 9's walk-through), each on a case
whose right answer is known: criterion `wanda`, schedule `oneshot_rewind`, model `vit`."""

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import TINY
from pruneexp.pruning.criteria import ScoreContext, criterion_config, score
from pruneexp.pruning.masks import MaskSet, prunable_weights
from pruneexp.pruning.select import select
from pruneexp.runner import run


def test_wanda_is_weight_times_input_norm_compared_within_rows():
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 4.0], [4.0, 1.0, 1.0]]))
    x = torch.tensor([[3.0, 0.0, 0.5], [4.0, 1.0, 0.0]])  # column norms 5, 1, 0.5
    ctx = ScoreContext(model=layer, params=dict(layer.named_parameters()), masks=MaskSet.dense({"weight": layer.weight}),
                       batches=lambda: iter([(x[:1], None), (x[1:], None)]), loss_fn=None, cfg=criterion_config("wanda"))
    s = score("wanda", ctx).scores["weight"]
    assert s.tolist() == [[5.0, 2.0, 2.0], [20.0, 1.0, 0.5]]
    keep = select({"weight": s}, 1 / 3, ctx.masks, scope="row")["weight"]
    assert keep.tolist() == [[True, True, False], [True, True, False]]  # the tie in row 0 goes to the earlier index
    magnitude = select({"weight": layer.weight.abs()}, 1 / 3, ctx.masks, scope="row")["weight"]
    assert magnitude[0].tolist() == [False, True, True]  # magnitude alone keeps the weight on a quiet input


def test_oneshot_rewind_at_zero_sparsity_retrains_the_dense_trajectory_exactly(make_cfg):
    """With nothing pruned, rewinding to iteration 0 and retraining repeats the dense training bit for bit."""
    tiny = ["train.duration=10ep", "quiet=true"]  # oneshot_rewind has no fine-tuning phase
    out = run(make_cfg(*tiny, "schedule=oneshot_rewind", "sparsity=0.0"))
    levels = pd.read_csv(out.directory / "levels.csv")
    assert levels["name"].tolist() == ["dense", "pruned", "rewound"]
    dense = torch.load(out.directory / "levels/level_000.pt", weights_only=True)["model"]
    again = torch.load(out.directory / "levels/level_002.pt", weights_only=True)["model"]
    assert all(torch.equal(dense[k], again[k]) for k in dense)
    out = run(make_cfg(*tiny, "schedule=oneshot_rewind", "sparsity=0.8", "schedule.rewind=3it"))
    levels = pd.read_csv(out.directory / "levels.csv")
    assert levels["sparsity"].tolist()[1:] == pytest.approx([0.8, 0.8], abs=1e-4)


def test_vit_attention_weights_are_pruned_and_the_run_completes(make_cfg):
    model_args = ["model=vit", "model.patch=4", "model.dim=16", "model.depth=1", "model.heads=2"]
    out = run(make_cfg(*TINY, *model_args, "train.duration=2ep", "schedule.finetune.duration=1ep", "sparsity=0.5",
                       "prune.scope=layerwise", "train.lr=0.01"))
    layers = pd.read_csv(out.directory / "layers.csv")
    pruned = layers[layers["level"] == 1].set_index("layer")["sparsity"]
    assert pruned["blocks.0.self_attn.in_proj_weight"] == pytest.approx(0.5, abs=1e-3)  # Q/K/V, invisible before
    assert set(pruned.index) == {"embed.weight", "blocks.0.self_attn.in_proj_weight", "blocks.0.self_attn.out_proj.weight",
                                 "blocks.0.linear1.weight", "blocks.0.linear2.weight", "head.weight"}
    with pytest.raises(Exception, match="does not take depth"):
        run(make_cfg(*TINY, "model=lenet_300_100", "+model.depth=2"))


def test_vit_flops_count_every_projection_and_the_attention_scores():
    """Per weight, 2 x tokens x fan-in x fan-out (17 tokens: 16 patches and [CLS]); in total also
    Q K^T and A V (4 x heads x 17 x 17 x head width). The fused encoder fast path and the packed
    Q/K/V projection must not hide any of it."""
    from pruneexp.measure.flops import count_layer_flops
    from pruneexp.models import create_model

    model = create_model("vit", (1, 28, 28), 10, depth=1)
    f = count_layer_flops(model, (1, 28, 28), list(prunable_weights(model)))
    t, d = 17, 64
    assert f.per_weight == {"embed.weight": 2 * 16 * 49 * d, "blocks.0.self_attn.in_proj_weight": 2 * t * d * 3 * d,
                            "blocks.0.self_attn.out_proj.weight": 2 * t * d * d, "blocks.0.linear1.weight": 2 * t * d * 2 * d,
                            "blocks.0.linear2.weight": 2 * t * 2 * d * d, "head.weight": 2 * d * 10}
    assert f.total == sum(f.per_weight.values()) + 4 * 4 * t * t * (d // 4)


def test_wanda_on_a_conv_reads_the_unfolded_patches():
    conv = nn.Conv2d(2, 3, 2, bias=False, padding=(0, 0))
    x = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    ctx = ScoreContext(model=conv, params=dict(conv.named_parameters()), masks=MaskSet.dense({"weight": conv.weight}),
                       batches=lambda: iter([(x, None)]), loss_fn=None, cfg=criterion_config("wanda"))
    s = score("wanda", ctx).scores["weight"]
    cols = torch.nn.functional.unfold(x, 2).transpose(1, 2).reshape(-1, 8).double()  # 4 images x 4 positions, 8 entries
    assert torch.allclose(s, conv.weight.detach().abs().double() * cols.norm(dim=0).view(1, 2, 2, 2))
