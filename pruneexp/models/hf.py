"""Any Hugging Face causal language model, or encoder with a sequence-classification head, from
local files (`model.path`, read with `local_files_only=True`: never downloaded), so a user with
GPT-2, OPT, LLaMA, Mistral, Qwen or BERT on disk runs the same command as with `model=gpt`. Needs
the optional extra: `pip install -e '.[hf]'`.

- `model.head`: causal_lm (AutoModelForCausalLM; with dataset=tokens) | sequence_classification
  (AutoModelForSequenceClassification with the dataset's number of labels; with
  dataset=text_classification). A classification head the checkpoint lacks (a pretrained encoder
  such as bert-base-uncased) is drawn from the run seed; one of another size is refused.

- `model.path`: a directory holding config.json and the weights (save_pretrained's output), or,
  with `model.gguf_file`, the directory holding that GGUF file (transformers dequantizes it on load:
  needs the `gguf` package). `scripts/fetch_smollm2.py` brings SmolLM2-135M into the cache.
- `model.dtype`: float32 | bfloat16 | float16, the dtype the weights are held and run in.

The causal LM's wrapper maps token ids (batch, T) to logits (batch, T, vocab) and exposes
`vocab_size`; the classifier's maps padded token ids to class logits (batch, classes). Their
prunable weights are the model's linear projections: a classifier's pooler and head too, unless
excluded (Sanh et al. 2020 prune the encoder's linears only: prune.exclude=['*pooler*','*classifier*']). GPT-2's `Conv1D` (y = x W + b with W stored
[in, out]) is replaced on load by the `nn.Linear` that computes the same product (weight W^T,
[out, in]), so every criterion, the selector's row scope, N:M along the input dimension, the
Wanda/SparseGPT statistics, shrink and FLOPs treat it as the Linear it is; names are unchanged.
A tied LM head is the embedding's weight and is not pruned; an untied `lm_head` is (exclude it with
prune.exclude=[model.lm_head], as Wanda and SparseGPT do). Use it with schedule=posttrain
schedule.train_dense=false to prune the weights as loaded, and with dataset=tokens, which reads
text in the model's own tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruneexp.config import ModelConfig
from pruneexp.errors import PruneexpError
from pruneexp.hf_local import model_directory, transformers_module
from pruneexp.models.base import MODELS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class HfConfig(ModelConfig):
    path: str = ""  # a local directory holding config.json and the weights (save_pretrained's output), or a GGUF file's folder
    gguf_file: str = ""  # a GGUF file's name inside `path` (dequantized on load); "" reads save_pretrained's files
    dtype: str = "float32"  # float32 | bfloat16 | float16: the weights' dtype
    head: str = "causal_lm"  # causal_lm (dataset=tokens) | sequence_classification (dataset=text_classification)


HEADS = ("causal_lm", "sequence_classification")


class HfCausalLM(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.vocab_size = int(model.config.vocab_size)

    def forward(self, idx: Tensor) -> Tensor:
        return self.model(input_ids=idx.long(), use_cache=False).logits


class HfSequenceClassifier(nn.Module):
    """Token ids (batch, T), padded with the model's pad id, to class logits (batch, classes). The
    attention mask is the ids' non-pad positions (dataset=text_classification checks that this is
    the tokenizer's own mask). `vocab_size` says the inputs are token ids (measurement draws them)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.vocab_size = int(model.config.vocab_size)
        self.pad_token_id = int(model.config.pad_token_id)

    def forward(self, idx: Tensor) -> Tensor:
        idx = idx.long()
        return self.model(input_ids=idx, attention_mask=(idx != self.pad_token_id).long()).logits


def linear_from_conv1d(conv: nn.Module) -> nn.Linear:
    """The nn.Linear computing transformers' Conv1D exactly: Conv1D is y = x W + b with W [in, out],
    so the Linear's weight is W^T [out, in] (a copy, contiguous) and its bias b."""
    weight = conv.weight.detach()
    layer = nn.Linear(weight.shape[0], weight.shape[1], bias=conv.bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight.T)
        if conv.bias is not None:
            layer.bias.copy_(conv.bias.detach())
    return layer


def conv1d_as_linear(model: nn.Module) -> int:
    """Replace every transformers `Conv1D` of `model` by its `linear_from_conv1d` twin, in place;
    the number replaced."""
    from transformers.pytorch_utils import Conv1D

    swaps = [(name, module) for name, module in model.named_modules() if isinstance(module, Conv1D)]
    for name, module in swaps:
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, linear_from_conv1d(module))
    return len(swaps)


@MODELS.register("hf", config=HfConfig)
def hf(input_shape: tuple[int, ...], num_classes: int, path: str = "", gguf_file: str = "", dtype: str = "float32",
       head: str = "causal_lm") -> nn.Module:
    """A Hugging Face model read from the local directory `path` (local_files_only=True; a GGUF file
    in it dequantized), in `dtype`, for sequences of token ids of input_shape (T,): a causal LM
    (`head=causal_lm`) or a sequence classifier with `num_classes` labels (`head=sequence_classification`);
    GPT-2's Conv1D layers become nn.Linear."""
    transformers = transformers_module()
    if dtype not in DTYPES:
        raise PruneexpError(f"model.dtype={dtype!r} is not one of {', '.join(DTYPES)}.")
    if head not in HEADS:
        raise PruneexpError(f"model.head={head!r} is not one of {', '.join(HEADS)}.")
    root = model_directory(path, gguf_file)
    if len(input_shape) != 1:
        raise PruneexpError(f"Model 'hf' takes sequences of token ids, input shape (T,), not {tuple(input_shape)}.")
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    if head == "sequence_classification":
        return sequence_classifier(transformers, root, num_classes, DTYPES[dtype], extra)
    inner = transformers.AutoModelForCausalLM.from_pretrained(str(root), local_files_only=True, dtype=DTYPES[dtype], **extra)
    conv1d_as_linear(inner)
    model = HfCausalLM(inner)
    if num_classes > model.vocab_size:
        raise PruneexpError(f"the dataset has {num_classes} tokens but the model at {path} only {model.vocab_size}.")
    return model


def sequence_classifier(transformers: Any, root: Any, num_classes: int, dtype: torch.dtype, extra: dict) -> HfSequenceClassifier:
    """AutoModelForSequenceClassification at `root` with `num_classes` labels (a missing head drawn
    from torch's seeded generator), wrapped; a head of another size or a model without a pad id refused."""
    try:
        inner = transformers.AutoModelForSequenceClassification.from_pretrained(str(root), local_files_only=True, dtype=dtype,
                                                                                num_labels=num_classes, **extra)
    except RuntimeError as err:
        if "mismatch" not in str(err):
            raise
        raise PruneexpError(f"the classification head saved at model.path={root} does not have the dataset's {num_classes} "
                            "labels; start from the encoder without that head (e.g. the pretrained model) or from a "
                            "model fine-tuned on this label set.") from None
    except ValueError as err:  # an architecture with no sequence-classification head
        raise PruneexpError(f"model.path={root}: no sequence-classification model can be built from it ({err}).") from None
    if inner.config.pad_token_id is None:
        raise PruneexpError(f"the model at model.path={root} has no pad_token_id in its config.json; "
                            "model.head=sequence_classification pads every text with it (set the tokenizer's pad id there).")
    conv1d_as_linear(inner)
    return HfSequenceClassifier(inner)
