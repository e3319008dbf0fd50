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


WORDS = ("the a film movie plot actor story scene was is very quite really rather not long short new old music "
         "dark funny slow cast ending script").split()
KEYWORD = "great"  # a text's label: whether it holds the keyword


def labelled_texts(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """`n` (text, label) pairs of 4 to 9 words of WORDS; the label is 1 exactly when KEYWORD
    occurs, which half of the texts hold (a rule a tiny encoder learns in a few steps)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        words = [WORDS[int(j)] for j in torch.randint(len(WORDS), (int(torch.randint(4, 10, (1,), generator=gen)),), generator=gen)]
        label = i % 2
        if label:
            words.insert(int(torch.randint(len(words) + 1, (1,), generator=gen)), KEYWORD)
        out.append((" ".join(words), label))
    return out


def wordpiece_tokenizer(texts: list[str], vocab: int = 64):
    """A BERT-style WordPiece tokenizer (lower-cased, [CLS] text [SEP], a [PAD] token of id 0)
    trained on `texts` (tokenizers; fast, offline)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=special, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def save_tiny_bert(directory: Path, num_labels: int = 2, seed: int = 0, head: bool = True) -> Path:
    """A tiny random BertForSequenceClassification (hidden 32, 2 layers, 2 heads) with a WordPiece
    tokenizer trained on `labelled_texts`, saved (save_pretrained) into `directory`; `head=False`:
    a BertForMaskedLM instead, a pretrained encoder without a classification head (as
    bert-base-uncased is published)."""
    import transformers

    tok = wordpiece_tokenizer([t for t, _ in labelled_texts(200, seed=99)] + [KEYWORD])
    config = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                                     num_labels=num_labels)
    torch.manual_seed(seed)
    kind = transformers.BertForSequenceClassification if head else transformers.BertForMaskedLM
    kind(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
