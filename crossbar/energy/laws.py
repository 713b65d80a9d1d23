"""Energy and time laws of one action: a DAC conversion, an ADC conversion, a digital operation.

All in SI units (J, s, Hz); ``constants`` is an ``EnergyConstants``. See docs/energy.md for the sources.
"""

from __future__ import annotations

import math

import numpy as np

from crossbar.config import EnergyConfig
from crossbar.energy.constants import NEUROSIM_SAR_HP, EnergyConstants


def dac_energy(bits: int, node_nm: float, constants: EnergyConstants) -> float:
    """One conversion of a ``bits``-bit amplitude DAC, J: ISAAC's 1-bit DAC times 2^(bits-1), scaled linearly
    from 32 nm to ``node_nm``. (A 1-bit pulse of the PWM and bit-serial encodings is a word-line driver:
    ``row_drive_energy``.)"""
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


def line_cap_per_cell(node_nm: float, constants: EnergyConstants) -> float:
    """Capacitance one cell adds to a word or bit line, F: a cell pitch of wire plus its access transistor (gate
    on the word line, drain on the bit line, both taken as ``access_width_features`` of gate capacitance)."""
    wire = constants.feature_cap(node_nm, constants.cell_pitch_features, constants.wire_cap_per_m)
    device = constants.feature_cap(node_nm, constants.access_width_features, constants.gate_cap_per_m)
    return wire + device


def row_drive_energy(cells: int, energy: EnergyConfig, constants: EnergyConstants) -> float:
    """One word-line pulse across ``cells`` cells of one tile, J: the driver swings the line's capacitance
    rail to rail, C_line vdd^2 (NeuroSim's and CiMLoop's row drivers: line capacitance from cells times
    wire and device capacitance per cell)."""
    return cells * line_cap_per_cell(energy.node_nm, constants) * energy.vdd**2


def column_charge_energy(cells: int, v_read: float, energy: EnergyConfig, constants: EnergyConstants) -> float:
    """Bringing one bit line of ``cells`` cells to the read voltage for one read, J: C_line v_read drawn from
    vdd."""
    return cells * line_cap_per_cell(energy.node_nm, constants) * v_read * energy.vdd


def capacitive_read_energy(cells: int, energy: EnergyConfig, constants: EnergyConstants) -> float:
    """One read of one column of a charge-domain array of ``cells`` cells, J: each cell's share of the line
    capacitance plus its own capacitor (``energy.cell_capacitance``) charged to vdd (C vdd^2)."""
    return cells * (line_cap_per_cell(energy.node_nm, constants) + energy.cell_capacitance) * energy.vdd**2


def register_clock_energy(energy: EnergyConfig, constants: EnergyConstants) -> float:
    """Clocking one register bit for one cycle, J: its clocked gate capacitance switched at vdd."""
    width = constants.feature_cap(energy.node_nm, constants.dff_clock_width_features, constants.gate_cap_per_m)
    return width * energy.vdd**2


def adc_front_energy(bits: int, energy: EnergyConfig, constants: EnergyConstants) -> float:
    """ADC front end and reference per conversion, J: ``adc_front_per_bit`` per resolved bit, scaled from
    45 nm, 0.9 V to the chip's node and supply like the logic."""
    return constants.adc_front_per_bit * bits * constants.logic_scale(energy.node_nm, energy.vdd)
