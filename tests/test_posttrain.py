"""Post-training pruning track with known answers: Wanda's per-row comparison on a constructed
layer, SparseGPT on layers small enough to solve exactly (exact OBS for one column, lazy block
updates exact, error between the exact optimum and magnitude's), the Markov chain's entropy rate
against a long empirical estimate, and a posttrain run of the GPT on markov data end to end."""

import itertools
import math

import pandas as pd
import pytest
import torch
from torch import nn

from pruneexp.data.language import MarkovChain
from pruneexp.models import create_model
from pruneexp.pruning.criteria import criterion_config
from pruneexp.pruning.criteria.curvature import obs_correction
from pruneexp.pruning.criteria.sparsegpt import damped, sparsegpt_prune
from pruneexp.pruning.masks import MaskSet, prunable_weights
from pruneexp.pruning.step import prune_step
from pruneexp.runner import run
from pruneexp.schedules.posttrain import sequential_blocks


def _prune_cfg(scope="row", granularity="weight", n=2, m=4):
    from omegaconf import OmegaConf

    from pruneexp.config import PruneConfig

    return OmegaConf.merge(OmegaConf.structured(PruneConfig), dict(scope=scope, granularity=granularity, n=n, m=m))


def _wanda_masks(scope: str) -> list:
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, 0.5, 4, 4], [4, 4, 8, 1]]))
    x = torch.tensor([[10.0, 0, 1, 0], [0, 10, 0, 1]])  # input column norms ||X_j|| = 10, 10, 1, 1
    model = nn.Sequential(layer)
    params = prunable_weights(model)
    masks = prune_step(model, params, MaskSet.dense(params), 0.5, criterion=criterion_config("wanda", batches=1, batch_size=2),
                       prune=_prune_cfg(scope), batches=lambda: iter([(x, torch.zeros(2))]), loss_fn=lambda o, y: o.sum())
    return masks["0.weight"].tolist()


def test_wanda_compares_within_each_output_row():
    """W = [[0.5, 0.5, 4, 4], [4, 4, 8, 1]], ||X_j|| = [10, 10, 1, 1]: S = |W| ||X_j|| =
    [[5, 5, 4, 4], [40, 40, 8, 1]]. Per output row at 50 % (Wanda's comparison group) each row keeps
    its first two inputs -- not its largest weights; compared over the whole layer (the reference's
    per-layer option) the top four are 40, 40, 8, 5, so row 0 keeps one weight and row 1 three."""
    assert _wanda_masks("row") == [[True, True, False, False], [True, True, False, False]]
    assert _wanda_masks("layerwise") == [[True, False, False, False], [True, True, True, False]]


def _layer(rows=3, cols=6, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cols, generator=g, dtype=torch.float64) @ torch.randn(cols, cols, generator=g, dtype=torch.float64)
    w = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    return w, x, x.T @ x / n


def _error(w_new, w, x):
    return float(((w_new - w) @ x.T).square().sum())


def test_sparsegpt_one_column_is_exact_obs_and_lazy_blocks_are_exact():
    """Pruning the first column of every row: SparseGPT's update is OBS's optimal one,
    w' = w - w_0 / [H^-1]_00 H^-1 e_0 (= `obs_correction`, the per-row least-squares solution),
    and the 128-column lazy batching changes nothing (blocksize 2 gives the same weights)."""
    w, _, h = _layer()
    keep = torch.ones_like(w, dtype=torch.bool)
    keep[:, 0] = False
    new, mask = sparsegpt_prune(w, h, mask=keep, damping=0.01, dtype=torch.float64)
    assert mask.equal(keep)
    assert torch.allclose(new, obs_correction(w, keep, damped(h, 0.01)), atol=1e-10)
    hinv = torch.linalg.inv(damped(h, 0.01))
    assert torch.allclose(new, w - (w[:, :1] / hinv[0, 0]) * hinv[0][None, :], atol=1e-10)
    # lazy updates: any mask, any block size, the same weights
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(w.shape, generator=g) > 0.5
    a, _ = sparsegpt_prune(w, h, mask=mask, blocksize=128, dtype=torch.float64)
    b, _ = sparsegpt_prune(w, h, mask=mask, blocksize=2, dtype=torch.float64)
    assert torch.allclose(a, b, atol=1e-10)


def test_sparsegpt_error_between_the_exact_optimum_and_magnitude():
    """On one row of 6 inputs at 50 %: the exact optimum is the best of the C(6, 3) = 20 masks each
    with its optimal correction. SparseGPT's reconstruction error ||(W' - W) X^T||^2 is no better
    than that optimum and no worse than magnitude pruning's (no update); on several random layers."""
    for seed in range(5):
        w, x, h = _layer(rows=1, cols=6, seed=seed)
        new, mask = sparsegpt_prune(w, h, sparsity=0.5, damping=1e-8, dtype=torch.float64)
        assert int(mask.sum()) == 3
        best = min(_error(obs_correction(w, torch.tensor([[j in kept for j in range(6)]]), h), w, x)
                   for kept in itertools.combinations(range(6), 3))
        mag_keep = torch.zeros_like(mask)
        mag_keep[0, w.abs().argsort(descending=True)[0, :3]] = True
        magnitude = _error(w * mag_keep, w, x)
        ours = _error(new, w, x)
        assert best - 1e-9 <= ours <= magnitude + 1e-9, (seed, best, ours, magnitude)


def test_sparsegpt_nm_keeps_n_of_every_m_and_the_selector_agrees():
    """2:4 along the input dimension: exactly two kept in every run of four, and the prune step's
    selector picks the same mask, with the updated weights written."""
    torch.manual_seed(0)
    layer = nn.Linear(8, 4, bias=False)
    model = nn.Sequential(layer)
    x = torch.randn(64, 8)
    params = prunable_weights(model)
    before = layer.weight.detach().clone()
    masks = prune_step(model, params, MaskSet.dense(params), 0.5, criterion=criterion_config("sparsegpt"),
                       prune=_prune_cfg("layerwise", "nm"), batches=lambda: iter([(x, torch.zeros(64))]), loss_fn=lambda o, y: o.sum())
    m = masks["0.weight"]
    assert (m.view(4, 2, 4).sum(-1) == 2).all()
    h = (x.T @ x).double() / len(x)
    expected, keep = sparsegpt_prune(before, h, prune_n=2, prune_m=4, dtype=torch.float64)
    assert keep.equal(m)
    assert torch.allclose(layer.weight.detach().double(), expected, atol=1e-5)


def test_markov_entropy_rate_matches_a_long_empirical_estimate():
    """H = -sum_c pi_c sum_j P_cj log P_cj against the plug-in entropy of (context, next) counts
    of 400 000 sampled transitions (2 000 stationary sequences of 202 symbols; an order-2 chain over
    4 symbols: 16 contexts x 4): within 0.01 nats (the plug-in bias is about (cells - contexts) / 2N
    ~ 6e-5, its spread about 0.003)."""
    chain = MarkovChain(4, 2, 0.5, seed=3)
    s = chain.sample(2000, 202, torch.Generator().manual_seed(0))
    ctx = (s[:, :-2] * 4 + s[:, 1:-1]).flatten()
    nxt = s[:, 2:].flatten()
    counts = torch.zeros(16, 4, dtype=torch.float64).index_put_((ctx, nxt), torch.ones(len(ctx), dtype=torch.float64), accumulate=True)
    p_ctx = counts.sum(1) / counts.sum()
    cond = counts / counts.sum(1, keepdim=True).clamp_min(1)
    empirical = float(-(p_ctx[:, None] * torch.where(cond > 0, cond * cond.log(), torch.zeros_like(cond))).sum())
    assert abs(empirical - chain.entropy_rate()) < 0.01
    # the stationary distribution is the empirical context frequency, and pi T = pi
    assert torch.allclose(p_ctx, chain.pi, atol=0.01)
    # the first target sees one symbol: its floor is H(X1 | X0) >= H
    assert chain.floor(1) == chain.prefix_entropy(2) - chain.prefix_entropy(1) >= chain.entropy_rate()


def test_gpt_blocks_and_tied_head():
    model = create_model("gpt", (16,), 11, n_layer=2, n_head=2, n_embd=8)
    names = list(prunable_weights(model))
    assert model.lm_head.weight is model.wte.weight and "wte.weight" not in names and len(names) == 8
    assert sequential_blocks(names) == [names[:4], names[4:]]
    out = model(torch.zeros(3, 16, dtype=torch.long))
    assert out.shape == (3, 16, 11)
    # causal: changing a later token leaves earlier logits unchanged
    x = torch.randint(0, 11, (1, 16))
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % 11
    assert torch.equal(model(x)[0, :10], model(y)[0, :10])


TINY_LM = ["dataset=markov", "dataset.train_size=256", "dataset.val_size=64", "dataset.test_size=64", "dataset.block_size=16",
           "model=gpt", "model.n_layer=2", "model.n_embd=16", "model.n_head=2", "schedule=posttrain", "train.duration=20it",
           "train.batch_size=32", "train.optimizer=adamw", "train.lr=3e-3", "train.eval_every=20it", "criterion.batches=2",
           "criterion.batch_size=16", "hardware.levels=none", "hardware.threads=1", "quiet=true"]


def test_posttrain_gpt_on_markov_records_perplexity_and_the_gap_to_the_floor(make_cfg):
    out = run(make_cfg(*TINY_LM, "criterion=sparsegpt", "prune.scope=layerwise", "sparsity=0.6"))
    levels = pd.read_csv(out.directory / "levels.csv")
    assert list(levels["name"]) == ["dense", "pruned"]
    layers = pd.read_csv(out.directory / "layers.csv")
    assert (layers[layers.level == 1]["sparsity"] - 0.6).abs().max() < 0.01  # every layer at its target
    row = levels.iloc[1]
    assert math.isclose(row["test_ppl"], math.exp(row["test_loss"]), rel_tol=1e-9)
    assert math.isclose(row["test_gap"], row["test_loss"] - row["entropy_floor"], rel_tol=1e-9)
    wanda = run(make_cfg(*TINY_LM, "criterion=wanda", "prune.scope=row", "prune.granularity=weight", "sparsity=0.5"))
    layers = pd.read_csv(wanda.directory / "layers.csv")
    assert (layers[layers.level == 1]["sparsity"] == 0.5).all()


def test_head_masks_zero_exactly_those_heads_and_shrink_matches():
    """Masking heads {1} of layer 0 and {0, 2} of layer 1: those heads' contexts (their slice of
    c_proj's input) are exactly zero and every other head's context is unchanged in layer 0 (the
    first masked layer: its input is unchanged); the physically shrunk model (fewer heads) computes
    the masked model's logits."""
    from pruneexp.pruning.heads import attention_layers, head_masks, shrink_heads

    torch.manual_seed(0)
    model = create_model("gpt", (12,), 7, n_layer=2, n_head=3, n_embd=12)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_()  # biases too must go with their head
    x = torch.randint(0, 7, (4, 12))
    seen = {}
    for n, m in attention_layers(model).items():
        m.c_proj.register_forward_pre_hook(lambda _m, a, n=n: seen.__setitem__(n, a[0].detach().clone()))
    model(x)
    dense = dict(seen)
    params = prunable_weights(model)
    masks = head_masks(model, MaskSet.dense(params), {"blocks.0.attn": [1], "blocks.1.attn": [0, 2]})
    masked = create_model("gpt", (12,), 7, n_layer=2, n_head=3, n_embd=12)
    masked.load_state_dict(model.state_dict())
    masks.apply_(masked)
    for n, m in attention_layers(masked).items():
        m.c_proj.register_forward_pre_hook(lambda _m, a, n=n: seen.__setitem__(n, a[0].detach().clone()))
    logits = masked(x)
    ctx0, ctx1 = seen["blocks.0.attn"].view(4, 12, 3, 4), seen["blocks.1.attn"].view(4, 12, 3, 4)
    assert torch.equal(ctx0[:, :, 1], torch.zeros_like(ctx0[:, :, 1]))
    assert torch.equal(ctx1[:, :, 0], torch.zeros_like(ctx1[:, :, 0])) and torch.equal(ctx1[:, :, 2], torch.zeros_like(ctx1[:, :, 2]))
    assert torch.allclose(ctx0[:, :, [0, 2]], dense["blocks.0.attn"].view(4, 12, 3, 4)[:, :, [0, 2]], atol=1e-6)
    assert ctx1[:, :, 1].abs().sum() > 0
    shrunk, removed = shrink_heads(model, masks)
    assert removed == 3 and [m.n_head for m in attention_layers(shrunk).values()] == [2, 1]
    assert torch.allclose(shrunk(x), logits, atol=1e-5)


def test_posttrain_heads_by_michel_score(make_cfg):
    out = run(make_cfg(*TINY_LM, "schedule.heads=0.5", "sparsity=0.0"))
    levels = pd.read_csv(out.directory / "levels.csv")
    # 2 of the 4 heads (8 wide, n_embd 16) removed: each 3 x 8 x 16 c_attn weights and 16 x 8 of c_proj,
    # out of 2 x (16 x 48 + 16 x 16 + 2 x 16 x 64) = 6144 prunable weights
    assert math.isclose(levels.iloc[1]["sparsity"], 2 * (3 * 8 * 16 + 16 * 8) / 6144)


def _gpt_bench_rows(masks_of, forms, device="cpu", dtype="float32"):
    from omegaconf import OmegaConf

    from pruneexp.config import HardwareConfig
    from pruneexp.measure.latency import Target, measure_level

    torch.manual_seed(0)
    model = create_model("gpt", (16,), 11, n_layer=2, n_head=4, n_embd=32)
    hw = HardwareConfig(name="test", device=device, dtype=dtype, threads=1, batch_sizes=[2], forms=forms, warmup=1, min_reps=3,
                        min_time_s=0.0)
    rows = measure_level(model, masks_of(model), (16,), Target.from_config(OmegaConf.structured(hw)))
    return {r["form"]: r for r in rows}


def test_bench_forms_of_a_gpt_with_pruned_heads_and_neurons():
    """The latency forms on a transformer: dense, masked and CSR of a weight-pruned GPT; the
    shrunk form of a head-pruned GPT (fewer heads) and of a neuron-pruned one (torch-pruning removes
    the MLP's dead units), each checked equal to the masked model before it is timed."""
    from pruneexp.pruning.channels import with_channel_footprint
    from pruneexp.pruning.heads import head_masks

    def weights(model):
        g = torch.Generator().manual_seed(0)
        return MaskSet({n: torch.rand(p.shape, generator=g) < 0.5 for n, p in prunable_weights(model).items()})

    rows = _gpt_bench_rows(weights, ["dense", "masked", "csr"])
    assert all(r["status"] == "ok" for r in rows.values()), rows
    heads = _gpt_bench_rows(lambda m: head_masks(m, MaskSet.dense(prunable_weights(m)), {"blocks.0.attn": [0, 3], "blocks.1.attn": [1]}),
                            ["masked", "shrunk"])
    assert heads["shrunk"]["status"] == "ok" and "3 attention heads removed" in heads["shrunk"]["detail"]

    def neurons(model):
        masks = MaskSet.dense(prunable_weights(model))
        for i in range(2):
            keep = torch.ones_like(masks[f"blocks.{i}.mlp.c_fc.weight"])
            keep[::2] = False  # every other MLP unit
            masks.set_(f"blocks.{i}.mlp.c_fc.weight", keep)
        return with_channel_footprint(model, masks)

    shrunk = _gpt_bench_rows(neurons, ["masked", "shrunk"])["shrunk"]
    assert shrunk["status"] == "ok" and shrunk["equivalence_error"] <= 1e-4, shrunk


@pytest.mark.skipif(not torch.cuda.is_available(), reason="semi-structured 2:4 kernels need CUDA (sm >= 80)")
def test_bench_semi_structured_gpt_on_cuda():
    def two_four(model):
        masks = {}
        for n, p in prunable_weights(model).items():
            keep = torch.zeros(p.shape, dtype=torch.bool)
            keep.view(p.shape[0], -1, 4)[..., :2] = True
            masks[n] = keep
        return MaskSet(masks)

    row = _gpt_bench_rows(two_four, ["masked", "semi_structured"], device="cuda", dtype="float16")["semi_structured"]
    assert row["status"] in ("ok", "not applicable"), row


def test_gmp_on_a_gpt(make_cfg):
    """The existing gradual magnitude pruning schedule on a transformer (the BERT/GMP row, small)."""
    over = [o for o in TINY_LM if not o.startswith(("schedule=", "train.duration", "train.eval_every"))]
    out = run(make_cfg(*over, "schedule=gmp", "train.duration=30it", "train.eval_every=10it", "schedule.start=0it",
                       "schedule.end=20it", "schedule.frequency=10it", "sparsity=0.8"))
    levels = pd.read_csv(out.directory / "levels.csv")
    assert levels.iloc[-1]["name"] == "trained" and abs(levels.iloc[-1]["sparsity"] - 0.8) < 1e-3
    assert math.isfinite(levels.iloc[-1]["test_ppl"])


def test_text_dataset_splits_by_position():
    """dataset=text with no path: pydoc_data.topics, character ids, 90 / 5 / 5 % by position, y = x shifted."""
    from omegaconf import OmegaConf

    from pruneexp.config import DatasetConfig
    from pruneexp.data import load_data
    from pruneexp.data.language import read_text

    d = load_data(OmegaConf.merge(OmegaConf.structured(DatasetConfig), dict(name="text", block_size=32)), "cpu")
    text = read_text("")
    vocab = sorted(set(text))
    assert d.task == "language_model" and d.num_classes == len(vocab) and d.train_x.dtype == torch.int64
    first = "".join(vocab[i] for i in d.train_x[0].tolist())
    last = "".join(vocab[i] for i in d.test_x[-1].tolist()) + vocab[int(d.test_y[-1, -1])]
    assert text.startswith(first) and last in text[-200:]
    # targets are the next characters, and sequences follow each other without overlap
    assert torch.equal(d.train_x[0, 1:], d.train_y[0, :-1]) and int(d.train_y[0, -1]) == int(d.train_x[1, 0])
    n = len(text)
    assert len(d.train_x) == (int(0.9 * n) - 1) // 32 and len(d.val_x) == (int(0.05 * n) - 1) // 32


def test_sparsegpt_float32_as_the_reference_agrees_with_float64():
    """The default float32 arithmetic (the reference's) against float64 on one layer: the same
    masks up to near-ties (>= 99.5 % of entries) and a reconstruction error within 0.1 %."""
    w, x, h = _layer(rows=64, cols=256, seed=3)
    new64, keep64 = sparsegpt_prune(w, h, sparsity=0.5, dtype=torch.float64)
    new32, keep32 = sparsegpt_prune(w, h, sparsity=0.5, dtype=torch.float32)
    assert new32.dtype == torch.float32 and int(keep32.sum()) == int(keep64.sum())
    assert (keep32 == keep64).float().mean().item() >= 0.995
    e64, e32 = _error(new64, w, x), _error(new32.double(), w, x)
    assert abs(e32 - e64) <= 1e-3 * e64
