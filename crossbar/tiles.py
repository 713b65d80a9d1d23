"""Tiles that compute a layer's matrix product: analog crossbar tiles and an exact or integer digital tile.

Both take a float weight (out, in) and compute ``x @ W.T + b`` for x (B, in) float32 torch tensors, the
analog one through the simulated hardware. Gradients are not handled here (see ``crossbar.layers``).
"""

from __future__ import annotations

import numpy as np
import torch

from crossbar import device, irdrop
from crossbar import progress as progress_bars
from crossbar.config import ChipConfig, ConfigError
from crossbar.engine import TileRecord, convert_inputs, run_tiles
from crossbar.mapping import (
    TileGrid,
    conductance_targets,
    conductance_variance_units,
    effective_weights,
    weight_scales,
)
from crossbar.periphery import levels, quantize_reference

_EMPTY1 = np.zeros(0, dtype=np.float32)
_EMPTY2 = np.zeros((0, 0), dtype=np.float32)


class AnalogTiles:
    """One layer programmed onto a grid of crossbar tiles: a seeded chip instance.

    Holds, in normalised units (weights in [-1, 1], inputs in [-1, 1], outputs in cell currents):
    ``weights`` (in, out) float32 numpy, the effective weights the programmed conductances realise, row block r
    occupying rows ``grid.row_slice(r)``; ``block_weights`` (R, rows, out), the same padded with zero rows to
    whole row blocks; ``digital_scale`` (R, out), turning tile outputs back into weight units (weight scaling
    times drift compensation); ``full_scale`` (R, out), the ADC range of every tile column; ``cell_variance``
    (R * rows, out) or None, per-cell read-noise variance times digital_scale**2, zero on padding rows;
    ``row_conductance`` (in,) float64, siemens: the programmed conductances (at ``t_inference``, all devices)
    each word line drives, summed over the layer's columns, for the array energy sum V^2 G t.
    ``record``: the frozen ``crossbar.engine.TileRecord`` the forward pass reads, rebuilt whenever the ADC or
    DAC ranges change. Per-forward noise is drawn from a counter-based stream keyed by (seed, number of the call).
    ``progress``: a bar over the arrays whose IR-drop matrices are computed (``crossbar.progress``).
    """

    def __init__(self, weight: np.ndarray, chip: ChipConfig, seed: int, progress: bool | None = None) -> None:
        weight = np.asarray(weight, dtype=np.float64)
        self.chip = chip
        self.seed = seed
        self.grid = TileGrid.for_shape(weight.shape[1], weight.shape[0], chip.tile)
        self.dac_range = chip.dac.input_range
        self.calibrated = chip.adc.mode != "calibrated" and chip.dac.mode != "calibrated"
        self._program(weight.T, progress)
        self._periphery_constants()
        self._calls = 0

    def _program(self, crossbar_matrix: np.ndarray, progress: bool | None) -> None:
        chip, grid = self.chip, self.grid
        tiled = grid.pad(crossbar_matrix)
        scales = weight_scales(tiled, chip.mapping)
        normalised = tiled / scales
        targets = conductance_targets(normalised, chip.mapping)
        conductances = device.program(targets, chip.device, chip.mapping, self.seed)
        read = conductances.at_inference
        if not chip.wires.ideal:
            read = self._with_ir_drop(read, progress)
        # Padding cells are not on the computed path: zero them so no statistic counts them.
        used = grid.pad(np.ones_like(crossbar_matrix))
        realised = effective_weights(read, chip.mapping) * used
        # Energy (crossbar.energy): conductance each word line drives, summed over its devices and columns.
        per_row = np.sum(conductances.at_inference * used, axis=(0, 3, 4)).reshape(-1)
        self.row_conductance = per_row[: grid.in_features]
        gain = np.ones_like(scales)
        if chip.device.drift_compensation and chip.device.model != "none":
            gain = self._drift_compensation(normalised, realised)
        digital_scale = scales * gain
        self.block_weights = _row_blocks(realised, grid)
        self.weights = self.block_weights.reshape(-1, grid.out_features)[: grid.in_features]
        self.digital_scale = np.ascontiguousarray(grid.per_tile_column(digital_scale), dtype=np.float32)
        if chip.adc.mode == "weights":
            column_l1 = np.sum(np.abs(realised), axis=1, keepdims=True)
            full_scale = chip.adc.weights_fraction * column_l1
        else:
            full_scale = np.full_like(scales, chip.adc.full_scale)
        self.full_scale = np.ascontiguousarray(grid.per_tile_column(np.maximum(full_scale, 1e-12)), dtype=np.float32)
        self.cell_variance = None
        if chip.read_noise.cell_std > 0:
            per_cell = chip.read_noise.cell_std**2 * np.sum(conductances.at_inference**2, axis=0)
            per_cell = per_cell * conductance_variance_units(chip.mapping) * digital_scale**2
            self.cell_variance = _row_blocks(per_cell * used, grid).reshape(-1, grid.out_features)

    def _with_ir_drop(self, conductances: np.ndarray, progress: bool | None) -> np.ndarray:
        """(k, R, rows, C, cols) cell conductances -> effective conductances M of every array (tile and device).

        A partly used tile holds its weights in the rows next to the sense amplifiers and the columns next to
        the drivers; its unused cells are left unprogrammed (open), so they neither load nor lengthen the
        wires and each array is solved on its used block alone.
        """
        wires, grid = self.chip.wires, self.grid
        effective = np.zeros_like(conductances)
        arrays = grid.row_blocks * grid.col_blocks * conductances.shape[0]
        with progress_bars.bar(total=arrays, desc="IR-drop matrices", unit="array", progress=progress) as bar:
            for r, c in np.ndindex(grid.row_blocks, grid.col_blocks):
                used_rows = grid.row_slice(r).stop - grid.row_slice(r).start
                used_cols = min(grid.cols, grid.out_features - c * grid.cols)
                for k in range(conductances.shape[0]):
                    cells = conductances[k, r, :used_rows, c, :used_cols]
                    matrix = irdrop.effective_conductance(cells, wires.r_wl, wires.r_bl)
                    effective[k, r, :used_rows, c, :used_cols] = matrix
                    bar.update(1)
        return effective

    @staticmethod
    def _drift_compensation(target: np.ndarray, realised: np.ndarray) -> np.ndarray:
        """Per-tile gain mean|W_target| / mean|W_realised| (aihwkit's GlobalDriftCompensation readout)."""
        reference = np.mean(np.abs(target), axis=(1, 3), keepdims=True)
        current = np.maximum(np.mean(np.abs(realised), axis=(1, 3), keepdims=True), 1e-12)
        return np.where(reference > 0, reference / current, 1.0)

    def _periphery_constants(self) -> None:
        """Fold the ADC full scales and digital scales into the kernel's per-tile-column constants, and build
        the frozen record the forward pass reads. The one place the DAC and ADC levels are computed."""
        chip, full_scale, digital = self.chip, self.full_scale, self.digital_scale
        adc_levels = levels(chip.adc.bits)
        if adc_levels > 0:
            to_code = np.ascontiguousarray(np.float32(adc_levels) / full_scale, dtype=np.float32)
            from_code = np.ascontiguousarray(digital * (full_scale / np.float32(adc_levels)), dtype=np.float32)
        else:
            to_code, from_code = np.zeros_like(digital), digital
        std = chip.read_noise.output_std
        self.record = TileRecord(
            grid=self.grid,
            block_weights=self.block_weights,
            dac_levels=levels(chip.dac.bits),
            adc_levels=adc_levels,
            dac_range=-1.0 if chip.dac.mode == "dynamic" else float(self.dac_range),
            to_code=to_code,
            from_code=from_code,
            noise_scale=np.ascontiguousarray(std * digital, dtype=np.float32) if std > 0 else _EMPTY2,
            cell_variance=self.cell_variance,
        )

    def quantize_inputs(self, x: np.ndarray, squares: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """DAC: x (B, in) float32 -> word-line values code / L in [-1, 1] as (R, B, rows), zero on padding
        rows; input scales s (B, R); (s code / L)^2 as (B, R * rows), or empty."""
        grid = self.grid
        blocks = np.empty((grid.row_blocks, x.shape[0], grid.rows), dtype=np.float32)
        scales = np.empty((x.shape[0], grid.row_blocks), dtype=np.float32)
        volts_squared = np.empty((x.shape[0], grid.row_blocks * grid.rows), dtype=np.float32) if squares else _EMPTY2
        convert_inputs(self.record, x, blocks, scales, volts_squared)
        return blocks, scales, volts_squared

    def tile_outputs(self, x_blocks: np.ndarray) -> np.ndarray:
        """Every tile's output (R, B, out) in cell currents, before the ADC, for word-line values x_blocks
        (R, B, rows); used to calibrate ADC ranges (the forward pass converts them as it computes them)."""
        return np.matmul(x_blocks, self.block_weights)

    def calibrate(self, x: torch.Tensor) -> None:
        """Set calibrated DAC and ADC ranges from sample inputs x (B, in) float32."""
        chip, x_np = self.chip, x.detach().numpy()
        if chip.dac.mode == "calibrated":
            self.dac_range = float(max(np.percentile(np.abs(x_np), chip.adc.calibration_percentile), 1e-12))
            self._periphery_constants()  # the inputs below are converted with the calibrated range
        if chip.adc.mode == "calibrated":
            outputs = np.abs(self.tile_outputs(self.quantize_inputs(x_np)[0]))
            observed = np.percentile(outputs, chip.adc.calibration_percentile, axis=1)
            self.full_scale = np.ascontiguousarray(
                np.maximum(observed * chip.adc.calibration_margin, 1e-12), dtype=np.float32
            )
        self._periphery_constants()
        self.calibrated = True

    def keep_calibration(self, other: AnalogTiles) -> None:
        """Use the calibrated DAC/ADC ranges of another programming of the same layer."""
        self.dac_range = other.dac_range
        if self.chip.adc.mode == "calibrated":
            self.full_scale = other.full_scale
        self._periphery_constants()
        self.calibrated = True

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x (B, in) float32 -> (B, out) float32 through DAC, tiles, ADC and digital combination.

        Each call draws fresh per-forward noise from the stream of (seed, call number).
        """
        if not self.calibrated:
            raise ConfigError(
                "dac.mode / adc.mode: 'calibrated' ranges need sample inputs: "
                "crossbar.compile(model, chip, calibration_inputs=...)"
            )
        self._calls += 1
        noise_key = np.random.SeedSequence([self.seed, self._calls]).generate_state(1, np.uint64)[0]
        out = run_tiles(self.record, x.detach().numpy(), _EMPTY1 if bias is None else bias.detach().numpy(), noise_key)
        return torch.from_numpy(out)


def _row_blocks(tiled: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(R, rows, C, cols) -> (R, rows, out) float32, contiguous: each row block's tiles side by side."""
    flat = tiled.reshape(grid.row_blocks, grid.rows, grid.col_blocks * grid.cols)[..., : grid.out_features]
    return np.ascontiguousarray(flat, dtype=np.float32)


class DigitalTile:
    """An exact digital tile: float weights, or signed ``weight_bits`` integer weights per output channel
    with optional ``input_bits`` integer inputs per vector (the documented quantizer of ``periphery``)."""

    def __init__(self, weight: np.ndarray, weight_bits: int | None = None, input_bits: int | None = None) -> None:
        for name, bits in (("weight_bits", weight_bits), ("input_bits", input_bits)):
            if bits is not None and not (isinstance(bits, int) and 2 <= bits <= 32):
                raise ConfigError(f"digital.{name}: must be an integer from 2 to 32, or None (got {bits!r})")
        self.weight_bits, self.input_bits = weight_bits, input_bits
        self.weights = torch.from_numpy(_quantize_rows(np.asarray(weight, dtype=np.float32), weight_bits))

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not torch.isfinite(x).all():
            raise ValueError("digital layer: input contains NaN or inf")
        if self.input_bits is not None:
            x = torch.from_numpy(_quantize_rows(x.detach().numpy(), self.input_bits))
        return torch.nn.functional.linear(x, self.weights, None if bias is None else bias.detach())


def _quantize_rows(matrix: np.ndarray, bits: int | None) -> np.ndarray:
    """Each row of a float32 matrix through the documented quantizer, its max |value| as the full scale."""
    peak = np.maximum(np.abs(matrix).max(axis=1, keepdims=True), np.float32(1e-30))
    return np.ascontiguousarray(quantize_reference(matrix, peak, bits))
