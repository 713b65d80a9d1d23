"""Energy and time laws of one action: a DAC conversion, an ADC conversion, a digital operation.

All in SI units (J, s, Hz); ``constants`` is an ``EnergyConstants``. See docs/energy.md for the sources.
"""

from __future__ import annotations

import math

import numpy as np

from crossbar.config import EnergyConfig
from crossbar.energy.constants import NEUROSIM_SAR_HP, EnergyConstants


def dac_energy(bits: int, node_nm: float, constants: EnergyConstants) -> float:
    """One conversion of a ``bits``-bit DAC (1 for a word-line pulse), J: ISAAC's 1-bit DAC times 2^(bits-1),
    scaled linearly from 32 nm to ``node_nm``."""
    return constants.dac_1bit * 2.0 ** (bits - 1) * node_nm / constants.dac_node_nm


def sar_power_coefficients(node_nm: float) -> tuple[float, float]:
    """NeuroSim's (a, b), W, at ``node_nm``: its table, log-log interpolated between nodes, clamped at the ends."""
    nodes = np.log([row[0] for row in NEUROSIM_SAR_HP])
    a = np.log([row[1] for row in NEUROSIM_SAR_HP])
    b = np.log([row[2] for row in NEUROSIM_SAR_HP])
    x = math.log(node_nm)
    return float(np.exp(np.interp(x, nodes, a))), float(np.exp(np.interp(x, nodes, b)))


def sar_adc_energy(bits: int, node_nm: float, constants: EnergyConstants) -> float:
    """NeuroSim SAR ADC, J per conversion: (a bits + b) W for (bits + 1) steps of ``sar_step_time``."""
    a, b = sar_power_coefficients(node_nm)
    return (a * bits + b) * (bits + 1) * constants.sar_step_time


def murmann_adc_energy(bits: int, sample_rate: float, constants: EnergyConstants) -> float:
    """The Murmann-survey bound as in CiMLoop's ADC model, J per conversion at ``sample_rate`` Hz."""
    foms = min(
        constants.murmann_foms_max_db,
        constants.murmann_foms_intercept_db - constants.murmann_foms_rolloff_db * math.log(sample_rate),
    )
    sndr = 6.02059991 * bits + 1.76091259  # ideal quantizer: 20 log10(2) bits + 10 log10(1.5)
    return 1.0 / (2.0 * 10.0 ** ((foms - sndr) / 10.0))


def adc_conversion(bits: int, window: float, energy: EnergyConfig, constants: EnergyConstants) -> tuple[float, float]:
    """(J per conversion, s per conversion) of one ADC under the chip's law.

    ``window``: one read of the array, s. An ADC shared by ``adc_share`` columns converts them one after the
    other; the Murmann law is priced at the sample rate that keeps pace with the reads (``adc_share / window``),
    the SAR law takes its own (bits + 1) steps.
    """
    if energy.adc_law == "sar":
        return sar_adc_energy(bits, energy.node_nm, constants), (bits + 1) * constants.sar_step_time
    rate = energy.adc_share / window
    return murmann_adc_energy(bits, rate, constants), 1.0 / rate


def array_read_energy(cell_energy: float, charge: float, energy: EnergyConfig) -> float:
    """Energy of the array reads under the chip's ``array_law``, J.

    ``cell_energy``: sum V^2 G t, what the cells dissipate, J; ``charge``: sum V G t, what they conduct, C.
    ``"cells"`` prices the first (the read voltage as an ideal source, a lower bound); ``"supply"`` prices the
    charge drawn from the supply ``vdd`` (Q V: the drivers that hold the read voltage dissipate the rest).
    """
    return cell_energy if energy.array_law == "cells" else energy.vdd * charge


def digital_prices(energy: EnergyConfig, constants: EnergyConstants) -> dict[str, float]:
    """J per digital operation at the chip's node, supply and number format: add, mul, mac, nonlinear and per
    byte of buffer (SRAM) access."""
    scale = constants.logic_scale(energy.node_nm, energy.vdd)
    fmt = energy.digital_format
    add = getattr(constants, f"{fmt}_add") * scale
    mul = getattr(constants, f"{fmt}_mul") * scale
    return {
        "add": add,
        "mul": mul,
        "mac": add + mul,
        "nonlinear": constants.nonlinear_mul_adds * (add + mul),
        "memory_bytes": constants.sram_64bit / 8 * scale,
    }


def format_bytes(energy: EnergyConfig) -> int:
    """Bytes per value in the chip's digital number format."""
    return {"int8": 1, "int32": 4, "fp16": 2, "fp32": 4}[energy.digital_format]
