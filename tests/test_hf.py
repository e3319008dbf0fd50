"""model=hf: a Hugging Face causal LM read from a local directory, pruned post-training like model=gpt.
The model is a tiny randomly initialised LLaMA saved to a temporary folder (nothing downloaded)."""

import pandas as pd
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[hf]')")

from pruneexp.runner import run  # noqa: E402


def test_hf_llama_from_disk_pruned_post_training(make_cfg, tmp_path):
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny")
    out = run(make_cfg("dataset=markov", "dataset.train_size=128", "dataset.val_size=32", "dataset.test_size=32",
                       "dataset.block_size=16", "model=hf", f"model.path={tmp_path / 'tiny'}", "schedule=posttrain",
                       "schedule.train_dense=false", "criterion=sparsegpt", "prune.scope=layerwise", "sparsity=0.5",
                       "prune.exclude=[model.lm_head]", "criterion.batches=2", "criterion.batch_size=16",
                       "hardware.levels=none", "hardware.threads=1", "quiet=true"))
    layers = pd.read_csv(out.directory / "layers.csv")
    pruned = layers[layers.level == 1]
    assert len(pruned) == 14 and (pruned["sparsity"] == 0.5).all()  # q, k, v, o, gate, up, down per block
    assert pruned["layer"].str.startswith("model.model.layers.").all()
    levels = pd.read_csv(out.directory / "levels.csv")
    assert levels["test_ppl"].notna().all() and "train_steps" not in levels  # the weights as loaded: nothing trained
