"""Tiny randomly initialised Hugging Face causal LMs of each family, saved with a small BPE
tokenizer trained on the pydoc help topics, so model=hf and dataset=tokens are tested offline."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 128

FAMILIES = {
    "llama": ("LlamaConfig", dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=2, max_position_embeddings=64)),
    "mistral": ("MistralConfig", dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=1, max_position_embeddings=64)),
    "qwen2": ("Qwen2Config", dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=2, max_position_embeddings=64)),
    "opt": ("OPTConfig", dict(hidden_size=16, ffn_dim=32, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                              word_embed_proj_dim=16)),
    "gpt2": ("GPT2Config", dict(n_embd=16, n_layer=2, n_head=2, n_positions=64)),
}


def tokenizer(text: str):
    """A byte-level BPE tokenizer of VOCAB entries trained on `text` (tokenizers; fast, offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        special_tokens=["<eos>"], show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def save_tiny(directory: Path, family: str = "llama", seed: int = 0) -> Path:
    """A tiny `family` causal LM with a tokenizer trained on the first 20 000 characters of the
    pydoc help topics, saved (save_pretrained) into `directory`."""
    import transformers

    from pruneexp.data.tokens import pydoc_text

    name, kwargs = FAMILIES[family]
    kwargs = {**kwargs, "tie_word_embeddings": family != "llama"}  # llama: an untied, prunable lm_head
    tok = tokenizer(pydoc_text()[:20_000])
    config = getattr(transformers, name)(vocab_size=len(tok) + 8, **kwargs)  # room for added special tokens
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
