"""A small decoder-only transformer, the shape nanoGPT made standard (Radford et al. 2019, GPT-2;
Karpathy's nanoGPT):

    token + learned position embeddings
    -> n_layer pre-LayerNorm blocks: x + attn(ln_1(x)), then x + mlp(ln_2(x))
         attn: causal multi-head self-attention through F.scaled_dot_product_attention, with a
               fused q/k/v projection `c_attn` (rows [q | k | v], head h = rows h*hd:(h+1)*hd of each)
               and an output projection `c_proj`
         mlp:  c_fc (n_embd -> mlp_ratio * n_embd), GELU, c_proj back
    -> ln_f -> logits through the token embedding (tied head: `lm_head.weight is wte.weight`).

Inputs are token ids (batch, T), T <= block_size; outputs logits (batch, T, vocab). Every Linear is a
plain nn.Linear applied through its own forward, so the prunable weights are found by parameter
(pruneexp.pruning.masks) and their inputs seen by forward hooks (Wanda, SparseGPT); the tied head
is the embedding's weight, listed once and not pruned (an Embedding is not a prunable layer type).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneexp.config import ModelConfig
from pruneexp.errors import PruneexpError
from pruneexp.models.base import MODELS


@dataclass
class GptConfig(ModelConfig):
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: Optional[int] = None  # longest context; null: the dataset's sequence length
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * n_embd


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head, self.head_dim = n_head, n_embd // n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def heads_context(self, x: Tensor) -> Tensor:
        """Each head's attention output (its context vectors), shape (batch, heads, T, head_dim)."""
        b, t, _ = x.shape
        q, k, v = self.c_attn(x).split(self.n_head * self.head_dim, dim=2)
        q, k, v = (z.view(b, t, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        ctx = self.heads_context(x)
        return self.c_proj(ctx.transpose(1, 2).reshape(b, t, self.n_head * self.head_dim))


class Mlp(nn.Module):
    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, hidden)
        self.c_proj = nn.Linear(hidden, n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, hidden: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = Mlp(n_embd, hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_layer: int = 4, n_head: int = 4, n_embd: int = 128, mlp_ratio: int = 4):
        super().__init__()
        self.vocab_size, self.block_size = vocab_size, block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, mlp_ratio * n_embd) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied (Press & Wolf 2017)
        # nanoGPT's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))
            elif p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: Tensor) -> Tensor:
        idx = idx.long()
        t = idx.shape[1]
        if t > self.block_size:
            raise PruneexpError(f"gpt got {t} tokens; its block_size is {self.block_size}.")
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


@MODELS.register("gpt", config=GptConfig)
def gpt(input_shape: tuple[int, ...], num_classes: int, n_layer: int = 4, n_head: int = 4, n_embd: int = 128,
        block_size: Optional[int] = None, mlp_ratio: int = 4) -> GPT:
    """A nanoGPT-style decoder-only transformer over `num_classes` tokens for sequences of
    input_shape = (T,) token ids (a language-model dataset: markov, text)."""
    if len(input_shape) != 1:
        raise PruneexpError(f"Model 'gpt' takes sequences of token ids, input shape (T,), not {tuple(input_shape)}: "
                            "use a language-model dataset (dataset=markov or dataset=text).")
    block = int(block_size or input_shape[0])
    if block < input_shape[0]:
        raise PruneexpError(f"model.block_size={block} is shorter than the dataset's sequences ({input_shape[0]} tokens).")
    if n_layer < 1 or n_head < 1 or n_embd % n_head:
        raise PruneexpError(f"Model 'gpt' needs n_layer >= 1 and n_embd divisible by n_head (got {n_layer}, {n_embd}, {n_head}).")
    return GPT(num_classes, block, n_layer, n_head, n_embd, mlp_ratio)
