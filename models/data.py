"""Datasets of the shipped models: sequential digits (classification) and tiny-shakespeare characters (LM).

Nothing is downloaded. The digits come with scikit-learn; the text is read from the project's shared data
folder, ``$CROSSBAR_DATA`` if set, else ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8x8 digits (bundled, no download), pixels scaled to [0, 1]; 70/30 split, seed 0."""
    from sklearn.datasets import load_digits  # here: the text corpus loads without scikit-learn
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, data.target, test_size=0.3, random_state=0)
    return (torch.from_numpy(x_train), torch.from_numpy(y_train), torch.from_numpy(x_test), torch.from_numpy(y_test))


def sequential_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The demo's 70/30 digits split, each 8x8 image read pixel by pixel in raster order.

    Returns x_train (N, 64, 1) float32 in [0, 1], y_train (N,) int64, x_test, y_test.
    """
    x_train, y_train, x_test, y_test = digits_split()
    return x_train.unsqueeze(-1), y_train.long(), x_test.unsqueeze(-1), y_test.long()


def data_dir() -> Path:
    """The shared data folder: ``$CROSSBAR_DATA``, else ``../shared/data`` beside the repository."""
    path = Path(os.environ.get("CROSSBAR_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    if not path.is_dir():
        raise FileNotFoundError(f"data folder {path} not found; set CROSSBAR_DATA to the folder holding the data")
    return path


@dataclass(frozen=True)
class CharCorpus:
    """A character corpus as token ids: ``train`` and ``valid`` (int64 1-D), ``vocabulary`` (sorted chars)."""

    train: torch.Tensor
    valid: torch.Tensor
    vocabulary: str

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.vocabulary)}
        return torch.tensor([index[c] for c in text], dtype=torch.int64)

    def decode(self, ids: torch.Tensor) -> str:
        return "".join(self.vocabulary[i] for i in ids.tolist())


def tiny_shakespeare(valid_fraction: float = 0.1) -> CharCorpus:
    """tiny-shakespeare (1.1 MB) as characters; the last ``valid_fraction`` of the text is held out."""
    text = (data_dir() / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    vocabulary = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocabulary)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
    split = int(len(ids) * (1.0 - valid_fraction))
    return CharCorpus(ids[:split], ids[split:], vocabulary)


def lm_batches(ids: torch.Tensor, length: int, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """A random batch of windows from a token stream: inputs (batch, length) and next-token targets."""
    starts = torch.randint(0, len(ids) - length - 1, (batch,), generator=generator)
    window = torch.stack([ids[s : s + length + 1] for s in starts.tolist()])
    return window[:, :-1], window[:, 1:]
