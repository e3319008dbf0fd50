"""Block-by-block post-training pruning (pruneexp.pruning.blocks): the same masks and weights as
running the whole model once per block, at most two block forwards per calibration sample, and
every Hugging Face family through the same code."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[hf]')")

from hf_models import FAMILIES, save_tiny  # noqa: E402
from pruneexp.data import load_data  # noqa: E402
from pruneexp.pruning.blocks import block_list  # noqa: E402
from pruneexp.runner import run  # noqa: E402
from pruneexp.schedules.context import RunContext  # noqa: E402
from pruneexp.schedules.posttrain import prune_sequential  # noqa: E402
from pruneexp.validate import typed_config  # noqa: E402

TOKENS = ["dataset=tokens", "dataset.block_size=24", "dataset.nsamples=12", "criterion.batches=3", "criterion.batch_size=4",
          "schedule=posttrain", "schedule.train_dense=false", "hardware.levels=none", "hardware.threads=1", "quiet=true"]
METHODS = {"wanda": ["criterion=wanda", "prune.scope=row"],
           "sparsegpt": ["criterion=sparsegpt", "prune.scope=layerwise", "criterion.precision=float64"],
           "sparsegpt_24": ["criterion=sparsegpt", "prune.scope=layerwise", "prune.granularity=nm", "prune.n=2", "prune.m=4"],
           "magnitude": ["criterion=magnitude", "prune.scope=layerwise"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {family: save_tiny(root / family, family) for family in FAMILIES}


def context(make_cfg, *overrides: str) -> RunContext:
    cfg = typed_config(make_cfg(*overrides))
    return RunContext(cfg, load_data(cfg.dataset, "cpu"), torch.device("cpu"), quiet=True)


def pruned(ctx: RunContext, engine: str, calls: list[int] | None = None, started: list[int] | None = None):
    """Prune with `engine`; `calls[i]` counts the calibration samples whose run through block i
    completed, `started[i]` those whose run began (block 0's capture of its inputs included)."""
    model = ctx.build_model()
    masks = ctx.dense_masks(model)
    handles = []
    if calls is not None or started is not None:
        calls = calls if calls is not None else []
        started = started if started is not None else []
        _, blocks = block_list(model, list(masks.weights))
        calls.extend([0] * len(blocks))
        started.extend([0] * len(blocks))
        for i, b in enumerate(blocks):
            def count(counter, i):
                def hook(_m, args, kwargs, *_out):
                    hidden = args[0] if args else kwargs["hidden_states"]
                    counter[i] += hidden.shape[0]  # calibration samples through block i
                return hook
            handles.append(b.register_forward_hook(count(calls, i), with_kwargs=True))
            handles.append(b.register_forward_pre_hook(count(started, i), with_kwargs=True))
    masks = prune_sequential(ctx, model, masks, ctx.cfg.sparsity, engine=engine)
    for h in handles:
        h.remove()
    return model, masks


@pytest.mark.parametrize("method", list(METHODS))
def test_blocks_engine_equals_whole_model_engine_on_tiny_llama(make_cfg, tiny, method):
    ctx = context(make_cfg, "model=hf", f"model.path={tiny['llama']}", *TOKENS, *METHODS[method], "sparsity=0.5",
                  "prune.exclude=[model.lm_head]")
    calls_blocks, calls_model, started_blocks, started_model = [], [], [], []
    model_b, masks_b = pruned(ctx, "blocks", calls_blocks, started_blocks)
    model_m, masks_m = pruned(ctx, "model", calls_model, started_model)
    assert masks_b.equal(masks_m)
    for (n, a), (_, b) in zip(model_b.state_dict().items(), model_m.state_dict().items()):
        assert torch.equal(a, b), n
    samples, batch = 12, 4
    if method == "magnitude":  # reads no inputs: nothing runs
        assert calls_blocks == started_blocks == [0, 0]
        return
    # blocks engine: block 0 captures its inputs (12, stopped at its entry), then each block runs once
    # for the statistics and once for its outputs (the last block: statistics only): at most twice per sample
    assert started_blocks == [samples + 2 * samples, samples]
    # a statistics run completes only for the first batch: later ones stop after the block's last scored layer
    assert calls_blocks == [batch + samples, batch]
    # the whole-model engine runs every block up to the one it scores, for each block, and stops each
    # run after the scored block's last layer (the first batch's runs go through the whole model)
    assert started_model == [2 * samples, batch + samples]
    assert calls_model == [batch + samples, 2 * batch]


def test_untied_head_is_pruned_after_the_blocks_through_the_whole_model(make_cfg, tiny):
    ctx = context(make_cfg, "model=hf", f"model.path={tiny['llama']}", *TOKENS, *METHODS["wanda"], "sparsity=0.5")
    calls = []
    model_b, masks_b = pruned(ctx, "blocks", calls)
    assert "model.lm_head.weight" in masks_b.weights
    # stats (only the first batch of 4 completes), outputs, and one whole pass for the head
    assert calls == [4 + 12 + 12, 4 + 12]
    model_m, masks_m = pruned(ctx, "model")
    assert masks_b.equal(masks_m)
    assert masks_b["model.lm_head.weight"].float().mean().item() == pytest.approx(0.5)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "llama"])
def test_every_family_pruned_block_by_block(make_cfg, tiny, family):
    ctx = context(make_cfg, "model=hf", f"model.path={tiny[family]}", *TOKENS, *METHODS["sparsegpt"], "sparsity=0.5",
                  "criterion.precision=float64")
    calls = []
    model, masks = pruned(ctx, "blocks", calls)
    assert calls == [4 + 12, 4]  # outputs, and the statistics runs of the first batch of 4 (later ones stop early)
    for n in masks.weights:
        if ".layers." in n or ".h." in n:
            assert masks[n].float().mean().item() == pytest.approx(0.5, abs=1e-9), n
    m_model, m_masks = pruned(ctx, "model")
    assert masks.equal(m_masks)


def test_own_gpt_blocks_engine_equals_whole_model(make_cfg):
    over = ["dataset=markov", "dataset.train_size=64", "dataset.val_size=16", "dataset.test_size=16", "dataset.block_size=16",
            "model=gpt", "model.n_layer=3", "model.n_embd=32", "model.n_head=2", "schedule=posttrain", "schedule.train_dense=false",
            "criterion=wanda", "prune.scope=row", "criterion.batches=2", "criterion.batch_size=8", "sparsity=0.6", "quiet=true"]
    ctx = context(make_cfg, *over)
    calls = []
    model_b, masks_b = pruned(ctx, "blocks", calls)
    model_m, masks_m = pruned(ctx, "model")
    assert masks_b.equal(masks_m)
    assert calls == [8 + 16, 8 + 16, 8]  # outputs; the statistics runs complete for the first batch of 8 only


def test_refuses_hf_model_on_ids_of_another_dataset(make_cfg, tiny):
    with pytest.raises(Exception, match="dataset=tokens"):
        run(make_cfg("model=hf", f"model.path={tiny['llama']}", "dataset=text", "schedule=posttrain",
                     "schedule.train_dense=false", "criterion=wanda", "prune.scope=row", "quiet=true"))


def test_refuses_calibration_that_reads_part_of_the_windows(make_cfg, tiny):
    with pytest.raises(Exception, match="criterion.batches = 4"):
        run(make_cfg("model=hf", f"model.path={tiny['llama']}", *TOKENS, "dataset.nsamples=16", "criterion=wanda",
                     "prune.scope=row"))


def test_tokens_run_records_its_protocol(make_cfg, tiny):
    out = run(make_cfg("model=hf", f"model.path={tiny['gpt2']}", *TOKENS, *METHODS["wanda"], "sparsity=0.5"))
    levels = pd.read_csv(out.directory / "levels.csv")
    assert (levels["nsamples"] == 12).all() and (levels["seqlen"] == 24).all()
    assert levels["text_sha256"].nunique() == 1 and levels["test_ppl"].notna().all()
    assert levels.loc[1, "sparsity"] == pytest.approx(0.5, abs=1e-3)
