"""The published-silicon check: each chip preset on the workload its paper measured, and the leave-one-out fit.

Workload: full-tile matrix-vector products at the chip's stated precision: one nn.Linear that fills one tile
exactly, weights uniform in [-1, 1], inputs uniform in [-1, 1] (DAC-quantized to the chip's bits), seeded.

One constant is fitted to silicon: ``adc_front_per_bit`` (``crossbar.energy.constants``). The energy of a
workload is linear in it, E(k) = E_rest + k A (each chip has one value k_i that makes it exact); a fit on a set
of chips is the k that minimises their squared log errors of TOPS/W. Leave-one-out fits on all chips but one
and predicts the one left out (docs/energy.md has the table; ``benchmarks/energy_validation.py`` writes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.optimize import minimize_scalar
from torch import nn

from crossbar.compiler import compile as compile_model
from crossbar.config import ChipConfig
from crossbar.energy.breakdown import EnergyReport
from crossbar.energy.constants import EnergyConstants
from crossbar.energy.estimate import estimate

# What a macro's published efficiency covers: the array and its periphery, not the digital post-processing and
# buffers of a system around it. A chip's figure covers everything.
MACRO_COMPONENTS = ("dac", "drivers", "adc", "adc_front", "array", "control")
FITTED = "adc_front_per_bit"


@dataclass(frozen=True)
class Published:
    """A chip's published efficiency at one operating point (the preset's precision): TOPS/W, its ``scope``
    (``"chip"``: every component; ``"macro"``: the array and its periphery, MACRO_COMPONENTS), and TOPS per
    tile (core) where stated."""

    preset: str
    tops_per_watt: float
    scope: str
    citation: str
    tops_per_tile: float | None = None


PUBLISHED = (
    Published(
        "hermes",
        9.76,
        "chip",
        "Le Gallo et al., Nat. Electron. 2023: 9.76 TOPS/W, 63.1 TOPS on 64 cores (8-bit MVMs)",
        63.1 / 64,
    ),
    Published("ibm_speech", 12.4, "chip", "Ambrogio et al., Nature 2023: 12.4 TOPS/W chip-sustained (8-bit)"),
    Published("neurram", 15.95, "macro", "Wan et al., Nature 2022, Fig. 12 (4-bit in, 6-bit out, via CiMLoop)"),
    Published("reram22_isscc2021", 15.6, "macro", "Hung et al., Nat. Electron. 2021: 15.6 TOPS/W at 8-bit in/weight"),
    Published("sram7_sinangil2021", 351.0, "macro", "Sinangil et al., JSSC 2021: 351 TOPS/W (4b x 4b, 4b out)"),
    Published("sram65_jia2020", 400.0, "macro", "Jia et al., JSSC 2020, Table II: 400 TOPS/W at 1b, 0.85 V"),
)
# A second published figure of the same silicon, checked but not a chip of the fit: the HERMES core alone.
HERMES_CORE = Published("hermes", 10.5, "chip", "Khaddam-Aljameh et al., IEEE JSSC 2022: 10.5 TOPS/W per core")


def full_tile_model(chip: ChipConfig, batch: int = 64, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The compiled one-tile model and ``batch`` inputs of the full-tile workload on ``chip``.

    Wires are taken as ideal: their resistance changes the computed result (IR drop), not the counted energy
    (sum V^2 G t over the programmed cells), and solving it for a 512x512 tile takes minutes.
    """
    chip = chip.replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(chip.tile.rows, chip.tile.cols, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(chip.tile.cols, chip.tile.rows, generator=generator) * 2 - 1)
    x = torch.rand(batch, chip.tile.rows, generator=generator) * 2 - 1
    return compile_model(nn.Sequential(layer), chip, seed=seed), x


def full_tile_workload(
    chip: ChipConfig, batch: int = 64, seed: int = 0, constants: EnergyConstants | None = None
) -> EnergyReport:
    """Energy report of ``batch`` full-tile MVMs on ``chip`` (one tile, every cell used)."""
    return estimate(*full_tile_model(chip, batch, seed), constants=constants)


def scoped_energy(report: EnergyReport, scope: str) -> float:
    """J per inference of the components a published figure of this ``scope`` covers."""
    if scope == "chip":
        return report.energy
    if scope == "macro":
        return sum(report.by_component[c] for c in MACRO_COMPONENTS)
    raise ValueError(f"scope: must be chip or macro (got {scope!r})")


@dataclass(frozen=True)
class ChipLine:
    """One chip's workload as a line in the fitted constant: E(k) = rest + slope k, J per inference, over
    ``ops`` operations per inference; ``published`` TOPS/W."""

    published: Published
    ops: float
    rest: float
    slope: float

    def tops_per_watt(self, k: float) -> float:
        return self.ops / (self.rest + self.slope * k) / 1e12

    @property
    def exact_k(self) -> float:
        """The constant that makes this chip's prediction equal its published figure (<= 0: the model without
        the fitted term already spends more than the silicon)."""
        return (self.ops / (self.published.tops_per_watt * 1e12) - self.rest) / self.slope


def chip_line(published: Published, batch: int = 64, seed: int = 0) -> ChipLine:
    """Two estimates of the chip's workload, at the default fitted constant and twice it, give its line."""
    model, x = full_tile_model(ChipConfig.preset(published.preset), batch, seed)
    k0 = getattr(EnergyConstants(), FITTED)
    one = estimate(model, x, constants=EnergyConstants().replace(**{FITTED: k0}))
    two = estimate(model, x, constants=EnergyConstants().replace(**{FITTED: 2 * k0}))
    e1, e2 = scoped_energy(one, published.scope), scoped_energy(two, published.scope)
    slope = (e2 - e1) / k0
    return ChipLine(published, one.ops, e1 - slope * k0, slope)


def fit(lines: list[ChipLine]) -> float:
    """The fitted constant on these chips, J: the k > 0 that minimises the sum of squared log errors of their
    predicted TOPS/W (searched over 1e-16 to 1e-10 J). A chip whose energy hardly depends on k (the fitted term
    a small part of it) hardly moves the fit; one the model prices above the silicon pulls k towards zero."""

    def cost(log_k: float) -> float:
        k = math.exp(log_k)
        return sum(math.log(line.tops_per_watt(k) / line.published.tops_per_watt) ** 2 for line in lines)

    bounds = (math.log(1e-16), math.log(1e-10))
    result = minimize_scalar(cost, bounds=bounds, method="bounded", options={"xatol": 1e-6})
    return float(math.exp(result.x))


def leave_one_out(lines: list[ChipLine]) -> list[dict[str, float | str]]:
    """Per chip: published TOPS/W, in-sample prediction (fitted on all), left-out prediction (fitted on the
    others), the constants, and the relative errors |predicted / published - 1|."""
    k_all = fit(lines)
    rows = []
    for i, line in enumerate(lines):
        k_out = fit(lines[:i] + lines[i + 1 :])
        published = line.published.tops_per_watt
        in_sample, left_out = line.tops_per_watt(k_all), line.tops_per_watt(k_out)
        rows.append(
            {
                "preset": line.published.preset,
                "scope": line.published.scope,
                "published": published,
                "exact_k": line.exact_k,
                "k_all": k_all,
                "k_left_out": k_out,
                "in_sample": in_sample,
                "left_out": left_out,
                "in_sample_error": abs(in_sample / published - 1),
                "left_out_error": abs(left_out / published - 1),
            }
        )
    return rows
