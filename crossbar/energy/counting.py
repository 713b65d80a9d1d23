"""Activity of one forward pass, counted by forward hooks: what each module did, before any pricing.

Tiled layers are counted from the DAC codes their tiles actually convert and the conductances they actually
hold; other modules from their ``digital_ops`` method (the protocol of docs/energy.md) or, for standard
modules, from their shapes (``crossbar.energy.shapes``). Nothing here runs outside ``crossbar.estimate``.
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from crossbar import progress as progress_bars
from crossbar.config import ChipConfig
from crossbar.energy.laws import format_bytes
from crossbar.energy.shapes import standard_ops
from crossbar.layers import TiledLinear
from crossbar.tiles import AnalogTiles

DIGITAL_KEYS = ("add", "mul", "mac", "nonlinear")
PROTOCOL_KEYS = (*DIGITAL_KEYS, "memory_bytes")


@dataclass
class Activity:
    """What one module did over the counted forward pass (all calls summed).

    ``vectors``: input vectors through its tiles; ``cycles``: array reads per vector; ``window``: one read, s;
    ``dac_actions`` of a ``dac_bits``-bit DAC (word-line pulses for PWM and bit-serial inputs);
    ``adc_conversions`` of ``adc_bits`` bits; ``array_energy``: sum V^2 G t over every read, J (what the cells
    dissipate); ``array_charge``: sum V G t, C (the charge they conduct); ``macs`` of matrix products;
    ``digital``: counts of digital operations; ``memory_bytes`` moved through buffers.
    Periphery: ``row_pulses``: word-line drives summed over tiles (a row's pulse drives its line in every tile
    column); ``tile_rows`` and ``tile_cols``: cells on a bit line and on a word line; ``clocked_bits``:
    register bits clocked, summed over cycles and tiles (input codes per row, output codes per column, every
    clock cycle of every read); ``psum_bytes``: partial sums written to and read back from a buffer.
    """

    name: str
    kind: str
    placement: str
    calls: int = 0
    vectors: int = 0
    cycles: int = 0
    window: float = 0.0
    dac_bits: int = 0
    dac_actions: float = 0.0
    adc_bits: int = 0
    adc_conversions: float = 0.0
    array_energy: float = 0.0
    array_charge: float = 0.0
    macs: float = 0.0
    digital: dict[str, float] = field(default_factory=dict)
    memory_bytes: float = 0.0
    row_pulses: float = 0.0
    tile_rows: int = 0
    tile_cols: int = 0
    clocked_bits: float = 0.0
    psum_bytes: float = 0.0

    def add_digital(self, ops: dict[str, float]) -> None:
        for key, value in ops.items():
            if key == "memory_bytes":
                self.memory_bytes += value
            else:
                self.digital[key] = self.digital.get(key, 0.0) + value


def _popcount(codes: np.ndarray, bits: int) -> np.ndarray:
    """Number of 1 bits of each non-negative integer code (float array), over ``bits`` bits."""
    ints = codes.astype(np.int64)
    return sum(((ints >> k) & 1) for k in range(bits)).astype(np.float64)


def _count_analog(
    activity: Activity, tile: AnalogTiles, x2d: np.ndarray, has_bias: bool, first_group: bool, converted: bool
) -> None:
    """One group's tiles over input vectors x2d (n, in of the group): one MVM per vector. The groups of a
    layer sit on their own tiles and read in parallel: only the first counts the vectors (the reads in time).
    ``converted``: these inputs were already converted, with the same codes, for another layer of the same
    forward (``ActivityCounter``): the DAC actions and the buffer read of the input codes are not counted again;
    the word-line drives of these tiles are."""
    chip, grid = tile.chip, tile.grid
    energy = chip.energy
    if chip.dac.bits is None or chip.adc.bits is None:
        raise ValueError(
            f"crossbar.estimate: chip {chip.name!r} has no dac.bits / adc.bits; energy needs the converters' "
            "resolution (the ideal preset has none; use a chip with quantization)"
        )
    n_levels = tile.record.dac_levels  # the levels the tiles were built with (crossbar.tiles)
    blocks, _, _ = tile.quantize_inputs(x2d)  # exactly what the forward pass puts on the word lines
    unit = blocks.transpose(1, 0, 2).reshape(x2d.shape[0], -1)[:, : grid.in_features]
    codes = np.abs(np.rint(unit.astype(np.float64) * n_levels))
    batch = x2d.shape[0]
    # per input: the time at v_read that gives its charge (sum V t / v_read) and its energy (sum V^2 t / v_read^2)
    if energy.input_encoding == "pwm":  # one pulse of v_read, |code| clock cycles long
        charge_time, cycles = codes / energy.clock_hz, 1
        window, dac_bits, dac_actions = n_levels / energy.clock_hz, 1, np.count_nonzero(codes)
        energy_time = charge_time
    elif energy.input_encoding == "bit_serial":  # one read per magnitude bit, v_read on the rows whose bit is 1
        cycles = chip.dac.bits - 1
        ones = _popcount(codes, cycles)
        window, dac_bits, dac_actions = energy.integration_time, 1, ones.sum()
        charge_time = energy_time = ones * window
    else:  # amplitude DAC: v_read * code / L for one read
        charge_time, cycles = codes / n_levels * energy.integration_time, 1
        energy_time = (codes / n_levels) ** 2 * energy.integration_time
        window, dac_bits, dac_actions = energy.integration_time, chip.dac.bits, codes.size
    v_read = chip.mapping.v_read
    charge_sum = float(np.sum(charge_time @ tile.row_conductance))
    energy_sum = charge_sum if energy_time is charge_time else float(np.sum(energy_time @ tile.row_conductance))
    activity.array_charge += v_read * charge_sum
    activity.array_energy += v_read**2 * energy_sum
    activity.vectors += batch if first_group else 0
    activity.cycles, activity.window, activity.dac_bits, activity.adc_bits = cycles, window, dac_bits, chip.adc.bits
    activity.dac_actions += 0.0 if converted else float(dac_actions)
    activity.adc_conversions += float(batch * grid.row_blocks * grid.out_features * cycles)
    activity.macs += float(batch * grid.in_features * grid.out_features)
    outputs = batch * grid.out_features
    # per tile output: times the digital scale and the input scale; sum row blocks (and bit-serial shifts), bias
    activity.add_digital(
        {
            "mul": 2.0 * grid.row_blocks * outputs,
            "add": float(outputs * (grid.row_blocks * cycles - 1) + (outputs if has_bias else 0)),
        }
    )
    in_bytes = math.ceil(chip.dac.bits / 8)
    input_bytes = 0 if converted else grid.in_features * in_bytes
    activity.memory_bytes += batch * (input_bytes + grid.out_features * format_bytes(energy))
    # periphery: every tile column repeats the word-line pulses; registers clock on every cycle of every read
    activity.tile_rows, activity.tile_cols = grid.rows, grid.cols
    activity.row_pulses += float(dac_actions) * grid.col_blocks
    clock_cycles = max(1, math.ceil(window * energy.clock_hz - 1e-9))
    register_bits = grid.rows * chip.dac.bits + grid.cols * chip.adc.bits
    activity.clocked_bits += float(batch * grid.tiles * cycles * clock_cycles * register_bits)
    # partial sums of all row blocks but one go to a buffer and come back to be added
    activity.psum_bytes += 2.0 * batch * grid.out_features * (grid.row_blocks - 1) * format_bytes(energy)


def _count_digital_tile(
    activity: Activity, module: TiledLinear, x2d: np.ndarray, value_bytes: int, read_weights: bool
) -> None:
    """A digital tiled layer (all groups) over input vectors x2d (n, in_features); ``read_weights``: the first
    chunk of a call, which reads the weights from the buffer (reused for the rest of the call)."""
    batch, n_in, n_out = x2d.shape[0], module.in_features, module.out_features
    macs = float(batch * n_in * n_out // module.groups)
    weight_bits = module.digital_bits[0]
    weight_bytes = value_bytes if weight_bits is None else math.ceil(weight_bits / 8)
    activity.macs += macs
    activity.add_digital({"mac": macs, "add": float(batch * n_out) if module.bias is not None else 0.0})
    activity.memory_bytes += n_in * n_out // module.groups * weight_bytes if read_weights else 0
    activity.memory_bytes += batch * (n_in + n_out) * value_bytes


def _protocol_ops(name: str, module: nn.Module, inputs: tuple, output: object) -> dict[str, float]:
    ops = module.digital_ops(inputs, output)
    if not isinstance(ops, dict):
        raise TypeError(f"{name}.digital_ops must return a dict of operation counts, got {type(ops).__name__}")
    for key, value in ops.items():
        if key not in PROTOCOL_KEYS:
            raise ValueError(f"{name}.digital_ops: unknown key {key!r}; use {', '.join(PROTOCOL_KEYS)}")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
        if not ok:
            raise ValueError(f"{name}.digital_ops: {key} must be a finite non-negative number (got {value!r})")
    return {key: float(value) for key, value in ops.items()}


class ActivityCounter:
    """Forward hooks on every module of a compiled model; ``activities`` after one forward pass."""

    def __init__(self, model: nn.Module, chip: ChipConfig) -> None:
        self.model, self.chip = model, chip
        self.value_bytes = format_bytes(chip.energy)
        self.activities: dict[str, Activity] = {}
        self.unpriced: set[str] = set()
        self._names = {module: name or "(model)" for name, module in model.named_modules()}
        self._bar: tqdm | None = None  # the bar of the pass that ``run`` makes
        # Inputs the DACs converted in this pass: (input tensor id, DAC settings) -> a weak reference to the
        # tensor (a dead reference means its id may have been reused; no activation is kept alive). A second
        # layer reading the same activation with the same DAC settings (q, k and v of self-attention; a gated
        # MLP's gate and up projections) gets the same codes: the row DACs convert once and drive the word
        # lines of every tile column that reads them.
        self._converted: dict[tuple, weakref.ref] = {}

    def _activity(self, module: nn.Module, placement: str) -> Activity:
        name = self._names[module]
        if name not in self.activities:
            kind = type(module).__name__
            self.activities[name] = Activity(name, kind, placement)
        return self.activities[name]

    def _hook(self, module: nn.Module, inputs: tuple, output: object) -> None:
        name = self._names[module]
        if isinstance(module, TiledLinear):
            activity = self._activity(module, module.placement)
            activity.kind = module.kind()
            chunks = module.tile_inputs(inputs[0].detach())  # one MVM per vector (per output position)
            converted = module.placement == "analog" and self._seen(module, inputs[0])
            has_bias = module.bias is not None and module.bias_per_vector
            for c, chunk in enumerate(chunks):
                if module.placement == "analog":
                    for g, (tile, xg) in enumerate(zip(module.tiles, module.group_inputs(chunk), strict=True)):
                        xg = np.ascontiguousarray(xg.numpy())
                        _count_analog(activity, tile, xg, has_bias, first_group=g == 0, converted=converted)
                else:
                    _count_digital_tile(activity, module, chunk.numpy(), self.value_bytes, read_weights=c == 0)
            activity.add_digital(module.digital_ops_beyond_tiles(inputs[0], output))
            if self._bar is not None:
                self._bar.update(1)
        else:
            if callable(getattr(module, "digital_ops", None)):
                ops = _protocol_ops(name, module, inputs, output)
            elif list(module.children()):
                return  # a container: its children are counted by their own hooks
            else:
                ops = standard_ops(module, inputs, output, self.value_bytes)
                if ops is None:
                    self.unpriced.add(f"{name} ({type(module).__name__})")
                    return
            if not ops:
                return  # free (Identity, Dropout, ...)
            activity = self._activity(module, "digital")
            activity.add_digital(ops)
            activity.macs += ops.get("mac", 0.0)
        activity.calls += 1

    def _seen(self, module: TiledLinear, x: torch.Tensor) -> bool:
        """Whether this pass already converted input ``x`` for a layer with the same DAC settings (and records
        it). The settings: how the layer reads its input (its class and, for a convolution, its geometry:
        the same patches), width, groups and every group's tile rows, DAC levels and range."""
        dacs = tuple((t.grid.rows, t.record.dac_levels, t.record.dac_range) for t in module.tiles)
        reading = (type(module), repr(getattr(module, "geometry", None)), module.in_features, module.groups)
        key = (id(x), reading, dacs)
        before = self._converted.get(key)
        self._converted[key] = weakref.ref(x)
        return before is not None and before() is x

    def run(self, inputs: tuple, progress: bool | None = None) -> dict[str, Activity]:
        """One forward pass of the model on ``inputs`` (positional arguments), counting everything.
        ``progress``: a bar counting the tiled layers' calls as they are counted (``crossbar.progress``)."""
        hooks = [module.register_forward_hook(self._hook) for module in self.model.modules()]
        self._bar = progress_bars.bar(desc="counting activity", unit="layer call", progress=progress)
        try:
            with torch.no_grad(), self._bar:
                self.model(*inputs)
        finally:
            for hook in hooks:
                hook.remove()
            self._converted.clear()
        if self.unpriced:
            warnings.warn(
                "crossbar.estimate: not priced (unknown module types; give them a digital_ops method, "
                f"docs/energy.md): {', '.join(sorted(self.unpriced))}",
                stacklevel=3,
            )
        return self.activities
