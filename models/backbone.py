"""The backbone every state-space model of ``models/`` shares: encoder, residual blocks, decoder.

    x -> encoder -> [ x + dropout(mixer(norm(x))) ] * n_layers -> norm -> head

A *mixer* is any ``nn.Module`` mapping (batch, length, d_model) -> (batch, length, d_model): an S4D, DSS,
S5 or Mamba layer. Two heads:

- ``task="classify"``: inputs (B, L, d_input) float, encoder ``nn.Linear(d_input, d_model)``, mean over
  time, decoder ``nn.Linear(d_model, n_out)`` -> logits (B, n_out).
- ``task="lm"``: inputs (B, L) int64 token ids, encoder ``nn.Embedding(n_tokens, d_model)`` (a lookup: it
  stays digital on the chip), decoder ``nn.Linear(d_model, n_tokens)`` per step -> logits (B, L, n_tokens).

Every ``nn.Linear`` here and inside the mixers is what ``crossbar.compile`` puts on tiles.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

TASKS = ("classify", "lm")


class ResidualBlock(nn.Module):
    """Pre-norm residual block: ``x + dropout(mixer(LayerNorm(x)))``, x (B, L, d_model)."""

    def __init__(self, d_model: int, mixer: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.mixer = mixer
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.mixer(self.norm(x)))


class SequenceModel(nn.Module):
    """Encoder, ``n_layers`` residual blocks of ``make_mixer(d_model)``, final norm and a task head.

    ``d_input`` is the feature count per step (``classify``) or the vocabulary size (``lm``); ``n_out`` the
    class count (``classify``; for ``lm`` it must equal ``d_input``).
    """

    def __init__(
        self,
        d_input: int,
        d_model: int,
        n_layers: int,
        n_out: int,
        make_mixer: Callable[[int], nn.Module],
        task: str = "classify",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)} (got {task!r})")
        if task == "lm" and n_out != d_input:
            raise ValueError(f"task 'lm': n_out ({n_out}) must equal the vocabulary size d_input ({d_input})")
        self.task = task
        self.encoder = nn.Embedding(d_input, d_model) if task == "lm" else nn.Linear(d_input, d_model)
        self.blocks = nn.ModuleList(ResidualBlock(d_model, make_mixer(d_model), dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.decoder = nn.Linear(d_model, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        if self.task == "classify":
            h = h.mean(dim=1)
        return self.decoder(h)
