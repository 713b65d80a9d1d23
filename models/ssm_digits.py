"""The shipped sequential-digits models: their configurations, construction and checkpoints.

``load(name)`` returns a trained model (eval mode) from ``models/checkpoints/<name>.pt``; ``build(name)`` an
untrained one. Every model is ``models.backbone.SequenceModel`` on (B, 64, 1) pixel sequences, 10 classes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.backbone import SequenceModel
from models.dss import DSS
from models.s4d import S4D
from models.s5 import S5, bc_as_linear

CHECKPOINTS = Path(__file__).parent / "checkpoints"


@dataclass(frozen=True)
class DigitsConfig:
    """A model family, its sizes and training settings; ``options`` go to the mixer's constructor."""

    family: str
    options: dict = field(default_factory=dict)
    d_model: int = 64
    n_layers: int = 2
    d_state: int = 64
    epochs: int = 20
    lr: float = 4e-3


MIXERS = {"s4d": S4D, "dss": DSS, "s5": S5}
MODELS: dict[str, DigitsConfig] = {
    "s4d": DigitsConfig("s4d", {"init": "legs"}),
    "s4-ptd": DigitsConfig("s4d", {"init": "ptd"}),
    "dss": DigitsConfig("dss", lr=1e-2),
    "s5": DigitsConfig("s5", {"init": "legs"}),
    "s5-ptd": DigitsConfig("s5", {"init": "ptd"}, lr=1e-2),
}


def _config(name: str) -> DigitsConfig:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; shipped models: {', '.join(MODELS)}")
    return MODELS[name]


def build(name: str, seed: int = 0) -> SequenceModel:
    """An untrained model ``name``; layer i's mixer is initialised from seed ``seed + i``."""
    config = _config(name)
    torch.manual_seed(seed)
    layer = iter(range(config.n_layers))

    def make_mixer(d_model: int) -> nn.Module:
        mixer = MIXERS[config.family]
        return mixer(d_model, config.d_state, seed=seed + next(layer), **config.options)

    return SequenceModel(1, config.d_model, config.n_layers, 10, make_mixer)


def checkpoint_path(name: str) -> Path:
    _config(name)
    return CHECKPOINTS / f"{name}.pt"


def variants(name: str) -> list[tuple[str, SequenceModel]]:
    """The trained model ``name`` as it is evaluated: ``[(name, model)]``, plus, for the S5 family,
    ``(f"{name} (B, C on tiles)", model with B and C as real linears)`` (``models.s5.bc_as_linear``)."""
    model = load(name)
    if _config(name).family != "s5":
        return [(name, model)]
    return [(name, model), (f"{name} (B, C on tiles)", bc_as_linear(model))]


def load(name: str) -> SequenceModel:
    """The trained model ``name`` (eval mode) from its shipped checkpoint."""
    path = checkpoint_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path}; train it with python -m models.train_digits --model {name}")
    model = build(name)
    model.load_state_dict(torch.load(io.BytesIO(path.read_bytes()), weights_only=True))
    return model.eval()
