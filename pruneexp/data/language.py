"""Language-modelling data, offline: token sequences x (N, T) and their next tokens y (N, T), for
the `language_model` task (loss, perplexity exp(loss), token accuracy).

- `markov`: sequences from a random Markov chain of order k over V symbols, drawn from
  `dataset.chain_seed`. Each context c (the last k symbols) has a transition row P_c ~
  Dirichlet(concentration); sequences start in the stationary distribution pi of the chain on
  contexts, so their true entropy rate is known in closed form,

      H = - sum_c pi_c sum_j P_cj log P_cj   (nats per token),

  the lowest loss any model can reach once it sees k symbols; the first k-1 targets see fewer and
  their floor is the conditional entropy of the stationary marginals, H(X_{m} | X_{<m}). Their mean
  over the T targets of a sequence is `RawData.floor`, and levels.csv reports every loss's gap to it.
- `text`: character-level modelling of a local text file (`dataset.path`), or, with no path, of the
  help topics every Python ships (`pydoc_data.topics`, about 465 000 characters). Splits by position:
  the first 90 % of the text trains, the next 5 % validates, the last 5 % tests, each cut into
  non-overlapping sequences of T targets.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pruneexp.data.core import DATASETS, RawData
from pruneexp.errors import PruneexpError

TEXT_SPLITS = (0.90, 0.05, 0.05)  # train / validation / test, by position


class MarkovChain:
    """A random order-k Markov chain over V symbols: transition rows P[c] (c = the context, the
    last k symbols read as a base-V number) drawn from Dirichlet(concentration) by `seed`."""

    def __init__(self, vocab: int, order: int, concentration: float, seed: int):
        if vocab < 2 or order < 1 or concentration <= 0 or vocab**order > 1 << 20:
            raise PruneexpError(f"markov needs dataset.vocab_size >= 2, dataset.order >= 1, dataset.concentration > 0 and "
                                f"vocab_size**order <= 2**20 contexts (got {vocab}, {order}, {concentration}).")
        self.vocab, self.order, self.contexts = vocab, order, vocab**order
        rng = np.random.default_rng(seed)
        p = rng.dirichlet(np.full(vocab, float(concentration)), size=self.contexts)
        p = np.maximum(p, 1e-12)  # every transition possible: the chain is irreducible and aperiodic
        self.P = torch.from_numpy(p / p.sum(1, keepdims=True))  # float64 [contexts, vocab]
        self.successor = (torch.arange(self.contexts)[:, None] * vocab + torch.arange(vocab)[None]) % self.contexts
        self.pi = self.stationary()

    def stationary(self, tol: float = 1e-14, max_iter: int = 100_000) -> Tensor:
        """pi = pi T by power iteration on the chain of contexts (c -> (c V + j) mod V^k w.p. P_cj)."""
        pi = torch.full((self.contexts,), 1.0 / self.contexts, dtype=torch.float64)
        flow_to = self.successor.flatten()
        for _ in range(max_iter):
            new = torch.zeros_like(pi).index_add_(0, flow_to, (pi[:, None] * self.P).flatten())
            if float((new - pi).abs().sum()) < tol:
                return new
            pi = new
        return pi

    def entropy_rate(self) -> float:
        """H = -sum_c pi_c sum_j P_cj log P_cj, nats per token."""
        return float(-(self.pi * (self.P * self.P.log()).sum(1)).sum())

    def prefix_entropy(self, m: int) -> float:
        """Joint entropy of the first m symbols of a stationary sequence (m <= k)."""
        if m == 0:
            return 0.0
        joint = self.pi.view((self.vocab,) * self.order).sum(dim=tuple(range(m, self.order))) if m < self.order else self.pi
        joint = joint.flatten()
        joint = joint[joint > 0]
        return float(-(joint * joint.log()).sum())

    def floor(self, targets: int) -> float:
        """Mean over the targets X_1..X_T of a sequence of H(X_t | X_<t): the best mean loss."""
        total = 0.0
        for t in range(1, targets + 1):
            total += self.entropy_rate() if t >= self.order else self.prefix_entropy(t + 1) - self.prefix_entropy(t)
        return total / targets

    def sample(self, n: int, length: int, gen: torch.Generator) -> Tensor:
        """n sequences of `length` symbols (int64), started in the stationary distribution."""
        if length < self.order:
            raise PruneexpError(f"markov sequences need at least dataset.order + 1 = {self.order + 1} tokens (dataset.block_size + 1).")
        ctx = torch.multinomial(self.pi.float(), n, replacement=True, generator=gen)
        digits = [(ctx // self.vocab ** (self.order - 1 - i)) % self.vocab for i in range(self.order)]
        out = torch.empty(n, length, dtype=torch.int64)
        out[:, : self.order] = torch.stack(digits, 1)
        for t in range(self.order, length):
            nxt = torch.multinomial(self.P[ctx].float(), 1, generator=gen).squeeze(1)
            out[:, t] = nxt
            ctx = self.successor[ctx, nxt]
        return out


def _block_size(cfg: Any) -> int:
    t = int(cfg.block_size)
    if t < 1:
        raise PruneexpError(f"dataset.block_size must be >= 1 (got {t}).")
    return t


def markov_chain(cfg: Any) -> MarkovChain:
    return MarkovChain(int(cfg.vocab_size), int(cfg.order), float(cfg.concentration), int(cfg.chain_seed))


@DATASETS.register("markov", shape="(dataset.block_size,) token ids", classes="dataset.vocab_size (default 16)",
                   size="dataset.train_size sequences (validation held out of them) + test_size, generated")
def load_markov(cfg: Any) -> RawData:
    """Sequences of a random order-k Markov chain (see the module docstring); the chain comes from
    dataset.chain_seed, the sequences from dataset.split_seed; floor = the exact best mean loss."""
    t = _block_size(cfg)
    chain = markov_chain(cfg)
    gen = torch.Generator().manual_seed(int(cfg.split_seed) + 104729)
    n_train, n_test = int(cfg.train_size), int(cfg.test_size)
    if n_train < 1 or n_test < 1:
        raise PruneexpError(f"markov needs dataset.train_size >= 1 and dataset.test_size >= 1 (got {n_train}, {n_test}).")
    train = chain.sample(n_train, t + 1, gen)
    test = chain.sample(n_test, t + 1, gen)
    return RawData(train[:, :-1], train[:, 1:], test[:, :-1], test[:, 1:], chain.vocab, (t,), task="language_model",
                   floor=chain.floor(t))


def read_text(path: str) -> str:
    """The text of `path` (UTF-8, undecodable bytes replaced), or with no path the help topics of
    the standard library (pydoc_data.topics), joined in key order."""
    if not path:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[k] for k in sorted(topics))
    p = Path(path).expanduser()
    if not p.is_file():
        raise PruneexpError(f"dataset.path={path} is not a readable file; give a local text file (or no path for pydoc_data.topics).")
    return p.read_text(encoding="utf-8", errors="replace")


def _sequences(ids: Tensor, t: int) -> tuple[Tensor, Tensor]:
    """Non-overlapping sequences of t targets: x = ids[i*t : i*t + t], y shifted by one."""
    n = (len(ids) - 1) // t
    if n < 1:
        raise PruneexpError(f"a text split of {len(ids)} characters is shorter than dataset.block_size + 1 = {t + 1}.")
    x = ids[: n * t].view(n, t)
    y = ids[1 : n * t + 1].view(n, t)
    return x.clone(), y.clone()


@DATASETS.register("text", shape="(dataset.block_size,) character ids", classes="the characters of the text",
                   size="90 / 5 / 5 % of the text by position (default: pydoc_data.topics, ~465 000 characters)")
def load_text(cfg: Any) -> RawData:
    """Character-level language modelling of dataset.path (default: pydoc_data.topics), split by
    position 90 / 5 / 5 % into train / validation / test; dataset.val_size and test_size are unused."""
    t = _block_size(cfg)
    text = read_text(str(cfg.path))
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
    a = math.floor(TEXT_SPLITS[0] * len(ids))
    b = a + math.floor(TEXT_SPLITS[1] * len(ids))
    train, val, test = _sequences(ids[:a], t), _sequences(ids[a:b], t), _sequences(ids[b:], t)
    return RawData(*train, *test, len(vocab), (t,), task="language_model", val_x=val[0], val_y=val[1])
