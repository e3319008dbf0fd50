"""Any Hugging Face causal language model from a local directory (`model.path`, read with
`local_files_only=True`: never downloaded), so a user with GPT-2 or a small LLaMA on disk runs the
same command as with `model=gpt`. Needs the optional extra: `pip install -e '.[hf]'`.

The wrapper maps token ids (batch, T) to logits (batch, T, vocab) and exposes `vocab_size`. Its
prunable weights are the model's nn.Linear projections (LLaMA, Mistral, Qwen, OPT, ...), found by
parameter like any other model's; a tied LM head is the embedding's weight and is not pruned, an
untied `lm_head` is (exclude it with prune.exclude=[model.lm_head], as Wanda and SparseGPT do).
GPT-2's `Conv1D` projections (weights stored [in, out]) are not a prunable layer type. Use it with
schedule=posttrain schedule.train_dense=false to prune the weights as loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from pruneexp.config import ModelConfig
from pruneexp.errors import PruneexpError
from pruneexp.models.base import MODELS


@dataclass
class HfConfig(ModelConfig):
    path: str = ""  # a local directory holding config.json and the weights (save_pretrained's output)


class HfCausalLM(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.vocab_size = int(model.config.vocab_size)

    def forward(self, idx: Tensor) -> Tensor:
        return self.model(input_ids=idx.long(), use_cache=False).logits


@MODELS.register("hf", config=HfConfig)
def hf(input_shape: tuple[int, ...], num_classes: int, path: str = "") -> HfCausalLM:
    """A Hugging Face causal LM read from the local directory `path` (transformers'
    AutoModelForCausalLM, local_files_only=True), for sequences of token ids of input_shape (T,)."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as err:
        raise PruneexpError("model=hf needs the transformers package: pip install -e '.[hf]'.") from err
    if not path or not (Path(path).expanduser() / "config.json").is_file():
        raise PruneexpError(f"model.path={path!r} is not a local model directory (one with config.json); "
                            "model=hf never downloads: save the model there first (save_pretrained).")
    if len(input_shape) != 1:
        raise PruneexpError(f"Model 'hf' takes sequences of token ids, input shape (T,), not {tuple(input_shape)}.")
    model = HfCausalLM(AutoModelForCausalLM.from_pretrained(str(Path(path).expanduser()), local_files_only=True))
    if num_classes > model.vocab_size:
        raise PruneexpError(f"the dataset has {num_classes} tokens but the model at {path} only {model.vocab_size}.")
    return model
