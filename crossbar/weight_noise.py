"""Weight-noise models for sensitivity studies: a noisy copy of a model, seeded, on chosen layers only.

Three kinds (``WeightNoise.kind``):

- ``"additive"``: ``w + level * ref * n``, n ~ N(0, 1) per weight, ``ref`` the largest |w| of the weight's
  crossbar tile (``reference="tile"``, tiles of ``tile = (rows, cols)`` over the crossbar matrix W^T, as
  ``crossbar.tiles.TileGrid`` splits it) or of the whole layer (``reference="layer"``);
- ``"multiplicative"``: ``w * (1 + level * n)``;
- ``"device"``: the full chip: ``crossbar.compile`` with ``chip`` (programming error, drift to
  ``chip.device.t_inference``, read noise, DAC/ADC) on the chosen layers, every other layer on exact digital
  tiles. ``level`` is unused (set the chip's fields instead).

The first two perturb the float weights the tiles would hold and return a float model: fast, and the
noise is the only difference from the original. Layers are the single-matrix layers ``crossbar.compile``
maps (nn.Linear, convolutions, registered layer types: ``crossbar.compiler.mapped_layers``); the digital
factors of HPD layers stay exact. A grouped convolution's kernel is taken as one (out, in/G*k) matrix for the
tile reference of additive noise.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from crossbar import hpd as hpd_transform
from crossbar.compiler import compile, layer_matrix, mapped_layers
from crossbar.config import ChipConfig, ConfigError

KINDS = ("additive", "multiplicative", "device")
REFERENCES = ("tile", "layer")


@dataclass(frozen=True)
class WeightNoise:
    """One noise model: ``kind``, ``level`` (a standard deviation, relative; see the module docstring),
    ``reference`` and ``tile`` for additive noise, ``chip`` for device noise."""

    kind: str = "additive"
    level: float = 0.05
    reference: str = "tile"
    tile: tuple[int, int] = (256, 256)
    chip: ChipConfig = field(default_factory=lambda: ChipConfig.preset("default"))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"noise.kind: must be one of {', '.join(KINDS)} (got {self.kind!r})")
        if self.reference not in REFERENCES:
            raise ConfigError(f"noise.reference: must be one of {', '.join(REFERENCES)} (got {self.reference!r})")
        level = self.level
        if isinstance(level, bool) or not isinstance(level, int | float) or not np.isfinite(level) or level < 0:
            raise ConfigError(f"noise.level: must be a finite non-negative number (got {level!r})")
        if len(self.tile) != 2 or any(not isinstance(n, int) or n < 1 for n in self.tile):
            raise ConfigError(f"noise.tile: must be (rows, cols), two positive integers (got {self.tile!r})")

    def describe(self) -> dict:
        """JSON-ready settings (the chip by name and its device fields)."""
        if self.kind == "device":
            return {"kind": "device", "chip": self.chip.name, "device": vars(self.chip.device)}
        out = {"kind": self.kind, "level": self.level}
        return out | ({"reference": self.reference, "tile": list(self.tile)} if self.kind == "additive" else {})


def analog_layers(model: nn.Module) -> list[str]:
    """``mapped_layers`` less the digital factors of HPD layers."""
    digital = {
        f"{name}.{module.digital_factor}"
        for name, module in model.named_modules()
        if isinstance(module, hpd_transform.HPDLinear)
    }
    return [name for name in mapped_layers(model) if name not in digital]


def tile_reference(weight: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """Largest |w| of the tile holding each weight: weight (out, in) -> (out, in).

    The crossbar holds W^T (in rows, out columns): tiles are ``tile[0]`` inputs by ``tile[1]`` outputs.
    """
    out_f, in_f = weight.shape
    rows, cols = tile
    r_blocks, c_blocks = -(-in_f // rows), -(-out_f // cols)
    padded = torch.zeros(c_blocks * cols, r_blocks * rows, dtype=weight.dtype)
    padded[:out_f, :in_f] = weight.abs()
    peaks = padded.reshape(c_blocks, cols, r_blocks, rows).amax(dim=(1, 3))
    return peaks.repeat_interleave(cols, 0).repeat_interleave(rows, 1)[:out_f, :in_f]


def perturb(weight: torch.Tensor, noise: WeightNoise, generator: torch.Generator) -> torch.Tensor:
    """A noisy copy of a weight (out, in) under additive or multiplicative ``noise``."""
    draw = torch.randn(weight.shape, generator=generator, dtype=torch.float64).to(weight.dtype)
    if noise.kind == "multiplicative":
        return weight * (1 + noise.level * draw)
    if noise.kind != "additive":
        raise ConfigError(f"perturb: {noise.kind!r} noise is applied by crossbar.compile, not to float weights")
    ref = tile_reference(weight, noise.tile) if noise.reference == "tile" else weight.abs().max()
    return weight + noise.level * ref * draw


def noisy_copy(
    model: nn.Module,
    noise: WeightNoise,
    seed: int,
    layers: Iterable[str] | None = None,
    hpd: hpd_transform.HPDSpec | None = None,
) -> nn.Module:
    """A copy of ``model`` with ``noise`` on ``layers`` (names from ``analog_layers``; None: all of them).

    ``hpd``: layers to split first (``crossbar.hpd.apply``); their digital factors stay exact. The noise on a
    layer depends only on ``seed`` and the layer's name, so the same seed draws the
    same noise on a layer whatever else is noisy or split. The model is not modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"noisy_copy needs a torch.nn.Module, got {type(model).__name__}")
    work = copy.deepcopy(model)
    digital_factors = hpd_transform.apply(work, hpd) if hpd is not None else {}
    analog = analog_layers(work)
    chosen = analog if layers is None else list(layers)
    unknown = [name for name in chosen if name not in analog]
    if unknown:
        raise ConfigError(
            f"noise: {unknown[0]!r} is not an analog layer of the model (analog layers: {', '.join(analog)})"
        )
    if noise.kind == "device":
        exact = [name for name in analog if name not in chosen]
        return compile(work, noise.chip, seed=seed, digital=exact + list(digital_factors))
    with torch.no_grad():
        for name in chosen:
            module = work.get_submodule(name)
            key = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0]
            generator = torch.Generator().manual_seed(int(key))
            matrix = layer_matrix(module)  # a view: (out, in), whatever the layout of the parameter
            matrix.copy_(perturb(matrix, noise, generator))
    return work
