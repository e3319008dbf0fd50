"""Tasks: what a model is trained to do, i.e. its loss, its metrics, and how outputs meet targets
(OpenLTH's `model.loss_criterion`, made a registry). The training loop, evaluation and every
criterion that needs a loss read it from the task, never from a hard-coded cross-entropy.

- `classification`: logits (N, C) against labels (N,); loss = mean cross-entropy
  -(1/N) sum_i log softmax(z_i)[y_i]; metrics: loss and accuracy.
- `language_model`: logits (N, T, V) against next tokens (N, T); loss = mean token cross-entropy;
  metrics: loss, perplexity exp(loss) and token accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneexp.registry import Registry
from pruneexp.train.accel import autocast, channels_last

TASKS: Registry["Task"] = Registry("task")
LOGIT_BUDGET = 1 << 26  # logits evaluated at once (256 MiB in float32): 512 tokens x 49 152 words is 2 sequences
IGNORE = -100  # a target neither the loss nor the metrics count (F.cross_entropy's ignore_index)


@dataclass(frozen=True)
class Task:
    """Loss and metrics of one kind of supervision. `loss` is the training loss (a mean);
    `evaluate` gives the metrics of a model over resident tensors, the first of them `loss`."""

    name: str = "classification"

    def flat(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs as (rows, classes) and targets as (rows,): the shape cross-entropy takes."""
        return output.reshape(-1, output.shape[-1]), target.reshape(-1)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean cross-entropy of the output rows against their targets."""
        return F.cross_entropy(*self.flat(output, target))

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 2000, precision: str = "fp32",
                 nhwc: bool = False) -> dict[str, float]:
        """{loss: mean cross-entropy over every target, acc: fraction of targets ranked first,
        (+ ppl = exp(loss) for a language model)} of `model` in eval mode; its mode is restored.
        The forward runs under the training's `precision` (train/accel.py: autocast), image batches
        in channels-last order when `nhwc`; the loss is summed in float64 from float32 logits.
        An empty split (dataset.val_size=0: no validation) gives NaN, so nothing is selected on it."""
        if len(x) == 0:
            return self.finish(math.nan, math.nan)
        was_training = model.training
        model.eval()
        loss = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        count = 0
        vocab = getattr(model, "vocab_size", None)  # a language model: at most LOGIT_BUDGET logits at once
        if vocab and x.dim() == 2 and self.name == "language_model":
            batch_size = max(1, min(batch_size, LOGIT_BUDGET // (x.shape[1] * int(vocab))))
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            with autocast(precision, x.device):
                out = model(channels_last(xb) if nhwc else xb)
            logits, target = self.flat(out, y[i : i + batch_size])
            loss += F.cross_entropy(logits.float(), target, reduction="sum").double()
            correct += (logits.argmax(-1) == target).sum()
            count += int((target != IGNORE).sum())  # an ignored target (a window's last, dataset=tokens) is no prediction
        model.train(was_training)
        n = max(1, count)
        return self.finish(loss.item() / n, correct.item() / n)

    def finish(self, loss: float, acc: float) -> dict[str, float]:
        return dict(loss=loss, acc=acc)


@dataclass(frozen=True)
class LanguageModel(Task):
    """Next-token prediction: perplexity exp(mean token loss) beside loss and token accuracy."""

    name: str = "language_model"

    def finish(self, loss: float, acc: float) -> dict[str, float]:
        return dict(loss=loss, acc=acc, ppl=math.exp(min(loss, 700.0)))


TASKS.register("classification")(Task())
TASKS.register("language_model")(LanguageModel())
