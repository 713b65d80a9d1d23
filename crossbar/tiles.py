"""Tiles that compute a layer's matrix product: analog crossbar tiles and an exact or integer digital tile.

Both take a float weight (out, in) and compute ``x @ W.T + b`` for x (B, in) float32 torch tensors, the
analog one through the simulated hardware. Gradients are not handled here (see ``crossbar.layers``).
"""

from __future__ import annotations

import numpy as np
import torch

from crossbar import device, irdrop
from crossbar.config import ChipConfig, ConfigError
from crossbar.mapping import (
    TileGrid,
    conductance_targets,
    conductance_variance_units,
    effective_weights,
    weight_scales,
)
from crossbar.periphery import adc_accumulate_kernel, dac_kernel, levels, quantize_reference

_EMPTY1 = np.zeros(0, dtype=np.float32)
_EMPTY2 = np.zeros((0, 0), dtype=np.float32)


class AnalogTiles:
    """One layer programmed onto a grid of crossbar tiles: a seeded chip instance.

    Holds, in normalised units (weights in [-1, 1], inputs in [-1, 1], outputs in cell currents):
    ``weights`` (in, out) float32 numpy, the effective weights the programmed conductances realise, row block r
    occupying rows ``grid.row_slice(r)``; ``digital_scale`` (R, out), turning tile outputs back into weight
    units (weight scaling times drift compensation); ``full_scale`` (R, out), the ADC range of every tile
    column; ``cell_variance`` (in, out) or None, per-cell read-noise variance times digital_scale**2;
    ``row_conductance`` (in,) float64, siemens: the programmed conductances (at ``t_inference``, all devices)
    each word line drives, summed over the layer's columns, for the array energy sum V^2 G t.
    Per-forward noise is drawn from a counter-based stream keyed by (seed, number of the call).
    """

    def __init__(self, weight: np.ndarray, chip: ChipConfig, seed: int) -> None:
        weight = np.asarray(weight, dtype=np.float64)
        self.chip = chip
        self.seed = seed
        self.grid = TileGrid.for_shape(weight.shape[1], weight.shape[0], chip.tile)
        self.dac_range = chip.dac.input_range
        self.calibrated = chip.adc.mode != "calibrated" and chip.dac.mode != "calibrated"
        self._program(weight.T)
        self._periphery_constants()
        self._calls = 0
        self._buffer = np.empty((0, 0, 0), dtype=np.float32)

    def _program(self, crossbar_matrix: np.ndarray) -> None:
        chip, grid = self.chip, self.grid
        tiled = grid.pad(crossbar_matrix)
        scales = weight_scales(tiled, chip.mapping)
        normalised = tiled / scales
        targets = conductance_targets(normalised, chip.mapping)
        conductances = device.program(targets, chip.device, chip.mapping, self.seed)
        read = conductances.at_inference
        if not chip.wires.ideal:
            read = self._with_ir_drop(read)
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
        # stored padded to whole row blocks, so that one batched product computes every tile
        padded = np.zeros((grid.row_blocks * grid.rows, grid.out_features), dtype=np.float32)
        padded[: grid.in_features] = grid.unpad(realised)
        self._block_weights = torch.from_numpy(padded).view(grid.row_blocks, grid.rows, grid.out_features)
        self.weights = padded[: grid.in_features]
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
            self.cell_variance = np.ascontiguousarray(grid.unpad(per_cell), dtype=np.float32)

    def _with_ir_drop(self, conductances: np.ndarray) -> np.ndarray:
        """(k, R, rows, C, cols) cell conductances -> effective conductances M of every array (tile and device).

        A partly used tile holds its weights in the rows next to the sense amplifiers and the columns next to
        the drivers; its unused cells are left unprogrammed (open), so they neither load nor lengthen the
        wires and each array is solved on its used block alone.
        """
        wires, grid = self.chip.wires, self.grid
        effective = np.zeros_like(conductances)
        for r, c in np.ndindex(grid.row_blocks, grid.col_blocks):
            used_rows = grid.row_slice(r).stop - grid.row_slice(r).start
            used_cols = min(grid.cols, grid.out_features - c * grid.cols)
            for k in range(conductances.shape[0]):
                cells = conductances[k, r, :used_rows, c, :used_cols]
                effective[k, r, :used_rows, c, :used_cols] = irdrop.effective_conductance(cells, wires.r_wl, wires.r_bl)
        return effective

    @staticmethod
    def _drift_compensation(target: np.ndarray, realised: np.ndarray) -> np.ndarray:
        """Per-tile gain mean|W_target| / mean|W_realised| (aihwkit's GlobalDriftCompensation readout)."""
        reference = np.mean(np.abs(target), axis=(1, 3), keepdims=True)
        current = np.maximum(np.mean(np.abs(realised), axis=(1, 3), keepdims=True), 1e-12)
        return np.where(reference > 0, reference / current, 1.0)

    def _periphery_constants(self) -> None:
        """Fold the ADC full scales and digital scales into the kernel's per-tile-column constants."""
        n = np.float32(levels(self.chip.adc.bits))
        full_scale, digital = self.full_scale, self.digital_scale
        if n > 0:
            self.to_code = np.ascontiguousarray(n / full_scale, dtype=np.float32)
            self.from_code = np.ascontiguousarray(digital * (full_scale / n), dtype=np.float32)
        else:
            self.to_code, self.from_code = np.zeros_like(digital), digital
        std = self.chip.read_noise.output_std
        self.noise_scale = np.ascontiguousarray(std * digital, dtype=np.float32) if std > 0 else _EMPTY2

    def quantize_inputs(self, x: np.ndarray, squares: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """DAC: x (B, in) float32 -> (code / L in [-1, 1], input scales s (B, R), (s code / L)^2 or empty)."""
        out = np.empty_like(x)
        scales = np.empty((x.shape[0], self.grid.row_blocks), dtype=np.float32)
        volts_squared = np.empty_like(x) if squares else _EMPTY2
        fixed = -1.0 if self.chip.dac.mode == "dynamic" else self.dac_range
        if dac_kernel(x, self.grid.rows, levels(self.chip.dac.bits), fixed, out, scales, volts_squared):
            raise ValueError("analog layer: input contains NaN or inf; the DAC cannot convert it")
        return out, scales, volts_squared

    def tile_outputs(self, x_quantized: np.ndarray) -> np.ndarray:
        """Every tile's output (R, B, out) in cell currents: one batched BLAS product over the row blocks."""
        grid = self.grid
        batch = x_quantized.shape[0]
        shape = (grid.row_blocks, batch, grid.out_features)
        if self._buffer.shape != shape:
            self._buffer = np.empty(shape, dtype=np.float32)
        # torch's BLAS: numpy's OpenBLAS worker threads spin for about 0.1 s after each call and take both cores
        # from the numba kernels that follow (measured 1.5-2x slower). One bmm over the (R, B, rows) view of x
        # is faster than a product per row block.
        x_t = torch.from_numpy(x_quantized)
        padding = grid.row_blocks * grid.rows - grid.in_features
        if padding:
            x_t = torch.nn.functional.pad(x_t, (0, padding))
        x_blocks = x_t.view(batch, grid.row_blocks, grid.rows).transpose(0, 1)
        torch.bmm(x_blocks, self._block_weights, out=torch.from_numpy(self._buffer))
        return self._buffer

    def calibrate(self, x: torch.Tensor) -> None:
        """Set calibrated DAC and ADC ranges from sample inputs x (B, in) float32."""
        chip, x_np = self.chip, x.detach().numpy()
        if chip.dac.mode == "calibrated":
            self.dac_range = float(max(np.percentile(np.abs(x_np), chip.adc.calibration_percentile), 1e-12))
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
        with_cells = self.cell_variance is not None
        x_quantized, scales, volts_squared = self.quantize_inputs(x.detach().numpy(), squares=with_cells)
        tile_out = self.tile_outputs(x_quantized)
        # per-cell read-noise variance sum_i sigma_ij^2 (s x_q)_i^2: one matmul
        cell_var = _EMPTY2
        if with_cells:
            cell_var = torch.mm(torch.from_numpy(volts_squared), torch.from_numpy(self.cell_variance)).numpy()
        out = np.empty((x.shape[0], self.grid.out_features), dtype=np.float32)
        self._calls += 1
        noise_key = np.random.SeedSequence([self.seed, self._calls]).generate_state(1, np.uint64)[0]
        adc_accumulate_kernel(
            tile_out,
            self.to_code,
            self.from_code,
            levels(self.chip.adc.bits),
            scales,
            self.noise_scale,
            cell_var,
            noise_key,
            _EMPTY1 if bias is None else bias.detach().numpy(),
            out,
        )
        return torch.from_numpy(out)


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
