"""Bits per character of a character LM on held-out text, and the unigram / bigram baselines it must beat.

All three score the same targets: the text is cut into consecutive windows of ``context`` + 1 characters
overlapping by one; a window's first ``context`` characters are the model's input and every next character
is a target (so each target has between 0 and context - 1 characters of context; mean (context - 1) / 2).
Baselines are fitted on the training text with add-one (Laplace) smoothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def windows(ids: torch.Tensor, context: int, max_chars: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive (inputs, targets) windows of a token stream, each (n_windows, context).

    ``max_chars`` limits the text used (its first characters). The incomplete last window is dropped.
    """
    if ids.dim() != 1 or context < 1:
        raise ValueError(f"windows: expects a 1-D token stream and context >= 1, got {tuple(ids.shape)}, {context}")
    ids = ids[: max_chars + 1] if max_chars is not None else ids
    n = (len(ids) - 1) // context
    if n < 1:
        raise ValueError(f"windows: {len(ids)} tokens are too few for one window of {context}")
    return ids[: n * context].view(n, context), ids[1 : n * context + 1].view(n, context)


@torch.no_grad()
def bits_per_char(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch: int = 32) -> float:
    """Mean cross-entropy in bits of ``model``'s next-character predictions; inputs, targets (n, context)."""
    total = 0.0
    for start in range(0, len(inputs), batch):
        logits = model(inputs[start : start + batch])
        total += F.cross_entropy(
            logits.flatten(0, 1).float(), targets[start : start + batch].flatten(), reduction="sum"
        )
    return float(total) / (targets.numel() * math.log(2))


def unigram_bits(train: torch.Tensor, targets: torch.Tensor, vocabulary: int) -> float:
    """Cross-entropy in bits of the add-one smoothed character frequencies of ``train`` on ``targets``."""
    counts = torch.bincount(train, minlength=vocabulary).double() + 1.0
    log_p = torch.log2(counts / counts.sum())
    return float(-log_p[targets.flatten()].mean())


def bigram_bits(train: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, vocabulary: int) -> float:
    """Cross-entropy in bits of add-one smoothed P(next | current) fitted on ``train``, on (inputs -> targets)."""
    pairs = torch.bincount(train[:-1] * vocabulary + train[1:], minlength=vocabulary**2).double()
    counts = pairs.view(vocabulary, vocabulary) + 1.0
    log_p = torch.log2(counts / counts.sum(dim=1, keepdim=True))
    return float(-log_p[inputs.flatten(), targets.flatten()].mean())
