"""The shipped Mamba / Mamba-2 char-LMs: their architectures by name, and a loader for the trained weights.

    model = load("mamba-lm")        # SequenceModel in eval mode, trained weights from models/checkpoints/

A checkpoint (``models/checkpoints/<name>.pt``, written by ``python -m models.train``) is a dict of plain
data: ``name``, ``spec`` (the architecture below, checked on load), ``state_dict``, ``vocabulary``,
``metrics`` and ``training`` (the settings and seed that reproduce it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.backbone import SequenceModel
from models.mamba import Mamba
from models.mamba2 import Mamba2

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
MIXERS = {"mamba": Mamba, "mamba2": Mamba2}
SHAKESPEARE_VOCABULARY = 65  # distinct characters of tiny-shakespeare

SPECS: dict[str, dict[str, Any]] = {
    "mamba-lm": {
        "mixer": "mamba",
        "task": "lm",
        "d_input": SHAKESPEARE_VOCABULARY,
        "n_out": SHAKESPEARE_VOCABULARY,
        "d_model": 64,
        "n_layers": 3,
        "mixer_options": {"d_state": 8, "expand": 2, "d_conv": 4},
    },
    "mamba2-lm": {
        "mixer": "mamba2",
        "task": "lm",
        "d_input": SHAKESPEARE_VOCABULARY,
        "n_out": SHAKESPEARE_VOCABULARY,
        "d_model": 64,
        "n_layers": 3,
        "mixer_options": {"d_state": 16, "expand": 2, "headdim": 16, "d_conv": 4, "chunk": 32},
    },
}


SHIPPED = ("mamba-lm", "mamba2-lm")  # the models with a trained checkpoint in models/checkpoints/


def build(name: str, dropout: float = 0.0) -> SequenceModel:
    """A freshly initialised model of the architecture ``name`` (one of SPECS); seed torch before calling."""
    if name not in SPECS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(SPECS)}")
    spec = SPECS[name]
    mixer, options = MIXERS[spec["mixer"]], spec["mixer_options"]
    return SequenceModel(
        spec["d_input"],
        spec["d_model"],
        spec["n_layers"],
        spec["n_out"],
        lambda d_model: mixer(d_model, **options),
        task=spec["task"],
        dropout=dropout,
    )


def checkpoint_path(name: str) -> Path:
    return CHECKPOINTS / f"{name}.pt"


def read_checkpoint(name: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The checkpoint dict of model ``name`` (from ``path``, default the shipped one), checked against SPECS."""
    if name not in SPECS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(SPECS)}")
    path = Path(path) if path is not None else checkpoint_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint for {name!r} at {path}; train it with python -m models.train {name}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a truncated or foreign file
        raise ValueError(f"{path}: not a readable checkpoint ({error})") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path}: not a checkpoint of models.train (no state_dict)")
    if checkpoint.get("spec") != SPECS[name]:
        raise ValueError(f"{path}: its architecture {checkpoint.get('spec')} differs from SPECS[{name!r}]")
    return checkpoint


def load(name: str, path: str | os.PathLike | None = None) -> nn.Module:
    """The trained model ``name`` in eval mode, float32 on the CPU."""
    checkpoint = read_checkpoint(name, path)
    model = build(name)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
