"""``crossbar.estimate``: the energy and latency of a compiled model on its chip, from one real forward pass."""

from __future__ import annotations

import os

import torch
from torch import nn

from crossbar.config import ConfigError, EnergyConfig
from crossbar.energy.breakdown import COMPONENTS, EnergyReport, LayerEnergy
from crossbar.energy.constants import EnergyConstants
from crossbar.energy.counting import DIGITAL_KEYS, Activity, ActivityCounter
from crossbar.energy.laws import (
    adc_conversion,
    adc_front_energy,
    array_read_energy,
    capacitive_read_energy,
    column_charge_energy,
    dac_energy,
    digital_prices,
    register_clock_energy,
    row_drive_energy,
)
from crossbar.layers import TiledLinear


def _price(
    activity: Activity, chip_energy: EnergyConfig, v_read: float, constants: EnergyConstants, batch: int
) -> LayerEnergy:
    prices = digital_prices(chip_energy, constants)
    energy = dict.fromkeys(COMPONENTS, 0.0)
    seconds = 0.0
    if activity.vectors:
        adc_joules, adc_seconds = adc_conversion(activity.adc_bits, activity.window, chip_energy, constants)
        if activity.dac_bits > 1:  # an amplitude DAC; a 1-bit pulse is a line driver, priced under "drivers"
            energy["dac"] = activity.dac_actions * dac_energy(activity.dac_bits, chip_energy.node_nm, constants)
        energy["adc"] = activity.adc_conversions * adc_joules
        if chip_energy.array_law == "capacitive":
            energy["array"] = activity.adc_conversions * capacitive_read_energy(
                activity.tile_rows, chip_energy, constants
            )
        else:
            energy["array"] = array_read_energy(activity.array_energy, activity.array_charge, chip_energy)
        energy["drivers"] = activity.row_pulses * row_drive_energy(
            activity.tile_cols, chip_energy, constants
        ) + activity.adc_conversions * column_charge_energy(activity.tile_rows, v_read, chip_energy, constants)
        energy["adc_front"] = activity.adc_conversions * adc_front_energy(activity.adc_bits, chip_energy, constants)
        if chip_energy.readout == "current":
            energy["adc_front"] += constants.sense_mirror_ratio * chip_energy.vdd * activity.array_charge
        energy["control"] = activity.clocked_bits * register_clock_energy(chip_energy, constants)
        # every tile of the layer works in parallel; each read waits for its window and its shared ADC
        seconds += activity.vectors * activity.cycles * max(activity.window, chip_energy.adc_share * adc_seconds)
    energy["digital"] = sum(activity.digital.get(key, 0.0) * prices[key] for key in DIGITAL_KEYS)
    energy["movement"] = activity.memory_bytes * prices["memory_bytes"]
    energy["psum"] = activity.psum_bytes * prices["memory_bytes"]
    lane_ops = sum(activity.digital.get(k, 0.0) for k in ("add", "mul", "mac"))
    lane_ops += activity.digital.get("nonlinear", 0.0) * constants.nonlinear_mul_adds
    seconds += lane_ops / (chip_energy.digital_lanes * chip_energy.clock_hz)
    return LayerEnergy(
        name=activity.name,
        kind=activity.kind,
        placement=activity.placement,
        energy={k: v / batch for k, v in energy.items()},
        latency=seconds / batch,
        ops=2.0 * activity.macs / batch,
    )


def _batch_size(inputs: tuple) -> int:
    for value in inputs:
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError("crossbar.estimate: example_inputs hold no tensor with a batch dimension")


def estimate(
    analog_model: nn.Module,
    example_inputs: torch.Tensor | tuple,
    constants: EnergyConstants | dict[str, float] | str | os.PathLike | None = None,
    batch_size: int | None = None,
) -> EnergyReport:
    """Energy and latency of ``analog_model`` (from ``crossbar.compile``) on its chip, per inference.

    Runs one forward pass on ``example_inputs`` (a tensor, or a tuple of positional arguments) with hooks that
    count what every module does: DAC conversions and array energy sum V^2 G t from the actual DAC codes and
    programmed conductances, ADC conversions, digital operations (partial sums, scaling, activations, digital
    tiles, and modules' own ``digital_ops``), and buffer traffic. ``constants``: overrides of the shared energy
    constants (an ``EnergyConstants``, a dict or a JSON file). ``batch_size``: inferences in the inputs
    (default: their first dimension). Everything is per inference: the totals divided by ``batch_size``.
    """
    if not isinstance(analog_model, nn.Module):
        raise TypeError(f"crossbar.estimate needs a compiled torch module, got {type(analog_model).__name__}")
    tiled = [m for m in analog_model.modules() if isinstance(m, TiledLinear)]
    if not tiled:
        raise ValueError("crossbar.estimate: the model was not compiled (no tiled layer); use crossbar.compile first")
    chip = tiled[0].chip
    constants = EnergyConstants.load(constants)
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    batch = _batch_size(inputs) if batch_size is None else batch_size
    if not (isinstance(batch, int) and batch >= 1):
        raise ConfigError(f"batch_size: must be a positive integer (got {batch!r})")
    activities = ActivityCounter(analog_model, chip).run(inputs)
    layers = [_price(a, chip.energy, chip.mapping.v_read, constants, batch) for a in activities.values()]
    return EnergyReport(chip=chip.name, batch=batch, layers=layers, constants=constants.to_dict())
