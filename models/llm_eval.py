"""Perplexity of a causal LM on WikiText-2 with a sliding window, as Hugging Face's perplexity guide computes it.

    lm = models.llm.load("smollm2-135m")
    ids = wikitext2_ids(lm.tokenizer, tokens=1024)        # the first 1,024 tokens of the test split
    result = perplexity(lm, ids, window=1024, stride=512)  # result.perplexity, result.nll, result.scored

Windows of ``window`` tokens start every ``stride`` tokens. The first window scores all its next-token
predictions (window - 1); each later window scores only the tokens after the previous window's end, each
predicted with the window's context before it, so every token from the second on is scored exactly once.
``model(ids)`` must return logits (B, T, vocabulary) (``models.llm.CausalLM`` does, float or compiled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.data import data_dir


def wikitext2_ids(tokenizer: object, split: str = "test", tokens: int | None = None) -> torch.Tensor:
    """The token ids (N,) int64 of WikiText-2 ``split`` (``test`` or ``valid``: the text file as it is, word-level
    with ``<unk>``, from the shared data folder), cut to the first ``tokens`` if given."""
    if split not in ("test", "valid"):
        raise ValueError(f"wikitext2_ids: split must be 'test' or 'valid' (got {split!r}); the train split is not here")
    text = (data_dir() / "wikitext-2" / f"{split}.txt").read_text(encoding="utf-8")
    if tokens is not None:
        text = text[: 16 * tokens]  # a token spans fewer than 16 characters here; tokenize only what is needed
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.int64)
    if tokens is not None:
        if len(ids) < tokens:
            raise ValueError(f"wikitext2_ids: {split} split has {len(ids)} tokens in its prefix, fewer than {tokens}")
        ids = ids[:tokens]
    return ids


@dataclass(frozen=True)
class Perplexity:
    """``nll``: mean negative log-likelihood (nats per token) over ``scored`` predictions; ``perplexity`` its exp;
    ``window``, ``stride``: the sliding window (tokens); ``tokens``: the length of the scored stream."""

    nll: float
    scored: int
    window: int
    stride: int
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)

    def to_dict(self) -> dict[str, float | int]:
        return {"perplexity": self.perplexity, "nll": self.nll, "scored": self.scored, "window": self.window,
                "stride": self.stride, "tokens": self.tokens}  # fmt: skip


def windows(length: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored target position within the window) of every window over ``length`` tokens."""
    if not (1 <= stride <= window) or length < 2:
        raise ValueError(
            f"sliding window: need 1 <= stride <= window and at least 2 tokens (got {stride}, {window}, {length})"
        )
    spans, previous_end = [], 0
    for begin in range(0, length, stride):
        end = min(begin + window, length)
        # targets are positions 1..end-begin-1 of the window; score those past the previous window's end
        spans.append((begin, end, max(previous_end - begin, 1)))
        previous_end = end
        if end == length:
            break
    return spans


@torch.no_grad()
def perplexity(model: nn.Module, ids: torch.Tensor, window: int = 1024, stride: int = 512) -> Perplexity:
    """Sliding-window perplexity of ``model`` on the token stream ``ids`` (N,) int64 (see the module text)."""
    if ids.dim() != 1:
        raise ValueError(f"perplexity: expects a 1-D token stream, got shape {tuple(ids.shape)}")
    total, scored = 0.0, 0
    for begin, end, first in windows(len(ids), window, stride):
        chunk = ids[begin:end].unsqueeze(0)
        logits = model(chunk)[0, first - 1 : -1]
        targets = chunk[0, first:]
        total += float(nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))
        scored += len(targets)
    return Perplexity(total / scored, scored, window, stride, len(ids))
