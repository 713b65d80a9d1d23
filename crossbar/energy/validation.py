"""The published-silicon check: each chip preset on the workload its paper measured.

Full-tile matrix-vector products at the chip's stated precision: one nn.Linear that fills one tile exactly,
weights uniform in [-1, 1], inputs uniform in [-1, 1] (DAC-quantized to the chip's bits), seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crossbar.compiler import compile as compile_model
from crossbar.config import ChipConfig
from crossbar.energy.breakdown import EnergyReport
from crossbar.energy.estimate import estimate


@dataclass(frozen=True)
class Published:
    """A chip's published figures for 8-bit full-tile MVMs: TOPS/W, and TOPS per tile (core) where stated."""

    preset: str
    tops_per_watt: float
    tops_per_tile: float | None
    citation: str


PUBLISHED = (
    Published("hermes", 9.76, 63.1 / 64, "Le Gallo et al., Nat. Electron. 2023: 9.76 TOPS/W, 63.1 TOPS on 64 cores"),
    Published("hermes", 10.5, None, "Khaddam-Aljameh et al., IEEE JSSC 2022: 10.5 TOPS/W per core"),
    Published("ibm_speech", 12.4, None, "Ambrogio et al., Nature 2023: 12.4 TOPS/W chip-sustained"),
)


def full_tile_workload(chip: ChipConfig, batch: int = 64, seed: int = 0) -> EnergyReport:
    """Energy report of ``batch`` full-tile MVMs on ``chip`` (one tile, every cell used).

    Wires are taken as ideal: their resistance changes the computed result (IR drop), not the counted energy
    (sum V^2 G t over the programmed cells), and solving it for a 512x512 tile takes minutes.
    """
    chip = chip.replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(chip.tile.rows, chip.tile.cols, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(chip.tile.cols, chip.tile.rows, generator=generator) * 2 - 1)
    x = torch.rand(batch, chip.tile.rows, generator=generator) * 2 - 1
    return estimate(compile_model(nn.Sequential(layer), chip, seed=seed), x)
