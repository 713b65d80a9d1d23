"""Tiles that compute a layer's matrix product: analog crossbar tiles and an exact or integer digital tile.

Programming a layer (``AnalogTiles``): crossbar arrays are (rows = inputs, cols = outputs), so a torch weight W
(out, in) is placed as its transpose W.T (in, out), split into R row blocks x C column blocks of ``rows x cols``
tiles (``TileGrid``; the last block of each kind may be partly used: its padding is recorded for utilisation,
never computed), scaled per tile column or tile (``weight_scales``), mapped to target conductances
(``conductance_targets``), programmed through the device model (``crossbar.device.program``), optionally
solved for IR drop (``crossbar.irdrop``), and read back as effective weights (``effective_weights``). The
forward pass of the programmed tiles is ``crossbar.engine.run_tiles`` on the frozen ``TileRecord`` they build.

Both tiles take a float weight (out, in) and compute ``x @ W.T + b`` for x (B, in) float32 torch tensors, the
analog one through the simulated hardware. Gradients are not handled here (see ``crossbar.layers``).
"""

from __future__ import annotations

import collections
import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from crossbar import device, irdrop
from crossbar import progress as progress_bars
from crossbar.config import ChipConfig, ConfigError, MappingConfig, TileConfig
from crossbar.engine import TileRecord, convert_inputs, run_tiles
from crossbar.gaussian import call_key
from crossbar.heap import return_freed_memory
from crossbar.periphery import levels, quantize_reference

_EMPTY1 = np.zeros(0, dtype=np.float32)
_EMPTY2 = np.zeros((0, 0), dtype=np.float32)
# Cells per device in one programming part (``AnalogTiles._parts``): one 256 x 256 tile, 0.5 MB of float64.
PART_CELLS = 1 << 16


@dataclass(frozen=True)
class TileGrid:
    """How an (in_features x out_features) crossbar matrix sits on tiles of ``rows x cols``."""

    in_features: int
    out_features: int
    rows: int
    cols: int

    @classmethod
    def for_shape(cls, in_features: int, out_features: int, tile: TileConfig) -> TileGrid:
        return cls(in_features, out_features, tile.rows, tile.cols)

    @property
    def row_blocks(self) -> int:
        return -(-self.in_features // self.rows)

    @property
    def col_blocks(self) -> int:
        return -(-self.out_features // self.cols)

    @property
    def tiles(self) -> int:
        return self.row_blocks * self.col_blocks

    @property
    def utilisation(self) -> float:
        """Fraction of the allocated cells that hold a weight."""
        return self.in_features * self.out_features / (self.tiles * self.rows * self.cols)

    def row_slice(self, r: int) -> slice:
        return slice(r * self.rows, min((r + 1) * self.rows, self.in_features))

    def pad(self, matrix: np.ndarray) -> np.ndarray:
        """(in, out) -> (R, rows, C, cols), zero padded."""
        padded = np.zeros((self.row_blocks * self.rows, self.col_blocks * self.cols), dtype=matrix.dtype)
        padded[: self.in_features, : self.out_features] = matrix
        return padded.reshape(self.row_blocks, self.rows, self.col_blocks, self.cols)

    def unpad(self, tiled: np.ndarray) -> np.ndarray:
        """(R, rows, C, cols) -> (in, out)."""
        flat = tiled.reshape(self.row_blocks * self.rows, self.col_blocks * self.cols)
        return flat[: self.in_features, : self.out_features]

    def per_tile_column(self, values: np.ndarray) -> np.ndarray:
        """(R, 1 or rows, C, cols) -> (R, out): one value per row block and output column."""
        return values.reshape(self.row_blocks, self.col_blocks * self.cols)[:, : self.out_features]


def weight_scales(tiled_weights: np.ndarray, mapping: MappingConfig) -> np.ndarray:
    """Largest |w| of each tile column ("column") or of each tile ("tile"), shape (R, 1, C, cols).

    A column (or tile) of zeros gets scale 1 so that nothing is divided by zero.
    """
    axes = (1,) if mapping.weight_scaling == "column" else (1, 3)
    scales = np.max(np.abs(tiled_weights), axis=axes, keepdims=True)
    scales = np.broadcast_to(scales, (tiled_weights.shape[0], 1, tiled_weights.shape[2], tiled_weights.shape[3]))
    return np.where(scales > 0, scales, 1.0)


def conductance_targets(normalised: np.ndarray, mapping: MappingConfig) -> np.ndarray:
    """Target conductances in siemens for weights in [-1, 1].

    Returns shape (2, ...) for a differential pair (G+, G-), or (1, ...) for one device per weight around
    the reference conductance (g_min + g_max) / 2.
    """
    g_min, g_range = mapping.g_min, mapping.g_max - mapping.g_min
    if mapping.differential:
        return np.stack([g_min + np.maximum(normalised, 0) * g_range, g_min + np.maximum(-normalised, 0) * g_range])
    return (g_min + (normalised + 1.0) * 0.5 * g_range)[None]


def effective_weights(conductances: np.ndarray, mapping: MappingConfig) -> np.ndarray:
    """Normalised weights that conductances (siemens, from ``conductance_targets``) actually realise.

    The inverse of ``conductance_targets``: on target conductances it returns the weights in [-1, 1].
    """
    g_range = mapping.g_max - mapping.g_min
    if mapping.differential:
        return (conductances[0] - conductances[1]) / g_range
    return (conductances[0] - (mapping.g_min + mapping.g_max) / 2) * (2.0 / g_range)


def conductance_variance_units(mapping: MappingConfig) -> float:
    """Factor turning a conductance variance (S^2) into a variance of normalised weight (per device)."""
    g_range = mapping.g_max - mapping.g_min
    return (1.0 / g_range) ** 2 if mapping.differential else (2.0 / g_range) ** 2


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
    """

    def __init__(self, weight: np.ndarray, chip: ChipConfig, seed: int) -> None:
        weight = np.asarray(weight)  # (out, in); each programming part is read in float64 (``_program``)
        self.chip = chip
        self.seed = seed
        self.grid = TileGrid.for_shape(weight.shape[1], weight.shape[0], chip.tile)
        self.dac_range = chip.dac.input_range
        self.calibrated = chip.adc.mode != "calibrated" and chip.dac.mode != "calibrated"
        self._program(weight.T)
        self._periphery_constants()
        self._calls = 0
        self._bias_view: tuple[torch.Tensor, int, np.ndarray] | None = None

    def _program(self, crossbar_matrix: np.ndarray) -> None:
        """Program the layer part by part (``_parts``), each from the next draws of one seeded stream, and
        keep only what the forward pass and the energy model read: at most a few parts' float64 conductances
        exist at a time, so the transient memory is a few MB whatever the layer's size."""
        chip = self.chip
        stream = device.ProgrammingStream(chip.device, chip.mapping, self.seed)
        threads = 1 if chip.wires.ideal else torch.get_num_threads()
        with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
            self._program_parts(crossbar_matrix, stream, pool)
        # Programming allocates and frees a few MB of float64 temporaries per part (aihwkit's torch ops, numpy)
        # that the layer's long-lived arrays pin in glibc's heap: compiling SmolLM2-135M on the default chip left
        # 280 MB of freed heap resident (1.50 GB for 1.22 GB of compiled state) before this call.
        return_freed_memory()

    def _program_parts(
        self, crossbar_matrix: np.ndarray, stream: device.ProgrammingStream, pool: ThreadPoolExecutor | None
    ) -> None:
        """Program every part in order and store what it realises (``_store_part``).

        With IR drop the parts overlap: while the pool's threads solve one part's arrays (``_solve_ir_drop``),
        this thread programs the next part (aihwkit, one torch thread) and queues its arrays behind them, so
        the cores do not wait for programming. Parts are programmed and stored in order, so the draws and
        every sum are those of programming them one after another."""
        chip, grid = self.chip, self.grid
        self.block_weights = np.zeros((grid.row_blocks, grid.rows, grid.out_features), dtype=np.float32)
        self.digital_scale = np.empty((grid.row_blocks, grid.out_features), dtype=np.float32)
        self.full_scale = np.empty((grid.row_blocks, grid.out_features), dtype=np.float32)
        self.row_conductance = np.zeros((grid.row_blocks, grid.rows))
        self.cell_variance = None
        if chip.read_noise.cell_std > 0:
            self.cell_variance = np.zeros((grid.row_blocks, grid.rows, grid.out_features), dtype=np.float32)
        parts = self._parts()
        arrays = 0 if chip.wires.ideal else grid.tiles * (2 if chip.mapping.differential else 1)  # one per device
        # a bar on a terminal (crossbar.progress): the IR-drop solves are what makes a large compile take minutes
        bar = progress_bars.bar(total=arrays, desc="IR-drop matrices", unit="array", progress=None if arrays else False)
        pending: collections.deque = collections.deque()
        with bar:
            for r, blocks in parts:
                rows = grid.row_slice(r)
                columns = slice(blocks.start * grid.cols, min(blocks.stop * grid.cols, grid.out_features))
                part = TileGrid(rows.stop - rows.start, columns.stop - columns.start, grid.rows, grid.cols)
                tiled = part.pad(np.asarray(crossbar_matrix[rows, columns], dtype=np.float64))
                scales = weight_scales(tiled, chip.mapping)
                normalised = tiled / scales
                conductances = stream.program(conductance_targets(normalised, chip.mapping))
                read = conductances.at_inference
                solved: list[Future] = []
                if not chip.wires.ideal:
                    read, solved = self._solve_ir_drop(read, part, pool, bar)
                pending.append((r, columns, part, scales, normalised, conductances.at_inference, read, solved))
                while len(pending) > (1 if pool is not None else 0):
                    self._store_part(*pending.popleft())
            while pending:
                self._store_part(*pending.popleft())
        self.weights = self.block_weights.reshape(-1, grid.out_features)[: grid.in_features]
        self.row_conductance = self.row_conductance.reshape(-1)[: grid.in_features]
        if self.cell_variance is not None:
            self.cell_variance = self.cell_variance.reshape(-1, grid.out_features)

    def _store_part(
        self,
        r: int,
        columns: slice,
        part: TileGrid,
        scales: np.ndarray,
        normalised: np.ndarray,
        at_inference: np.ndarray,
        read: np.ndarray,
        solved: list[Future],
    ) -> None:
        """Store what one programmed part realises (once its IR-drop solves are done): its effective weights,
        digital and ADC scales, the conductance its word lines drive and its per-cell read-noise variance.

        ``at_inference``: (k, 1, rows, C, cols) conductances (S) at t_inference; ``read``: the same as the
        amplifiers see them (the effective conductances with IR drop, filled in by ``solved``)."""
        chip = self.chip
        for future in solved:
            future.result()
        # Padding cells are not on the computed path: zero them so no statistic counts them.
        used = part.pad(np.ones((part.in_features, part.out_features)))
        realised = effective_weights(read, chip.mapping) * used
        # Energy (crossbar.energy): conductance each word line drives, summed over its devices and columns.
        self.row_conductance[r] += np.sum(at_inference * used, axis=(0, 3, 4)).reshape(-1)
        gain = np.ones_like(scales)
        if chip.device.drift_compensation and chip.device.model != "none":
            gain = self._drift_compensation(normalised, realised)
        digital_scale = scales * gain
        self.block_weights[r, :, columns] = _row_blocks(realised, part)[0]
        self.digital_scale[r, columns] = part.per_tile_column(digital_scale)[0]
        if chip.adc.mode == "weights":
            full_scale = chip.adc.weights_fraction * np.sum(np.abs(realised), axis=1, keepdims=True)
        else:
            full_scale = np.full_like(scales, chip.adc.full_scale)
        self.full_scale[r, columns] = part.per_tile_column(np.maximum(full_scale, 1e-12))[0]
        if self.cell_variance is not None:
            per_cell = chip.read_noise.cell_std**2 * np.sum(at_inference**2, axis=0)
            per_cell = per_cell * conductance_variance_units(chip.mapping) * digital_scale**2
            self.cell_variance[r, :, columns] = _row_blocks(per_cell * used, part)[0]

    def _parts(self) -> list[tuple[int, range]]:
        """The parts a layer is programmed in, in order: (row block, column blocks), each row block's column
        blocks in runs of at most PART_CELLS cells per device. A layer of one row block and at most
        PART_CELLS / rows columns is one part, programmed exactly as before parts existed."""
        grid = self.grid
        run = max(1, PART_CELLS // (grid.rows * grid.cols))
        return [
            (r, range(c, min(c + run, grid.col_blocks)))
            for r in range(grid.row_blocks)
            for c in range(0, grid.col_blocks, run)
        ]

    def _solve_ir_drop(
        self, conductances: np.ndarray, part: TileGrid, pool: ThreadPoolExecutor | None, bar: tqdm
    ) -> tuple[np.ndarray, list[Future]]:
        """(k, 1, rows, C, cols) cell conductances of one row block's part -> the effective conductances M of
        every array (tile and device), same shape, and the futures that fill them in: the arrays are solved
        side by side on ``pool``'s threads (each holds BLAS to one thread; the solves release the GIL), or
        here when there is no pool (no futures). ``bar`` counts the arrays solved.

        A partly used tile holds its weights in the rows next to the sense amplifiers and the columns next to
        the drivers; its unused cells are left unprogrammed (open), so they neither load nor lengthen the
        wires and each array is solved on its used block alone.
        """
        wires, devices = self.chip.wires, conductances.shape[0]
        cells = np.ascontiguousarray(conductances).reshape(devices, part.rows, -1)  # (k, rows, C * cols)
        effective = np.zeros_like(cells)
        used_rows = part.in_features
        arrays = [
            (k, slice(c * part.cols, min((c + 1) * part.cols, part.out_features)))
            for c in range(part.col_blocks)
            for k in range(devices)
        ]

        def solve(array: tuple[int, slice]) -> None:
            k, used = array
            effective[k, :used_rows, used] = irdrop.effective_conductance(
                cells[k, :used_rows, used], wires.r_wl, wires.r_bl
            )
            bar.update()

        if pool is None:
            for array in arrays:
                solve(array)
            return effective.reshape(conductances.shape), []
        return effective.reshape(conductances.shape), [pool.submit(solve, array) for array in arrays]

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

    def __getstate__(self) -> dict:
        """The state a chip file stores (``crossbar.save``): the programmed arrays once each, as torch tensors
        (``torch.save`` writes them as raw storages and ``torch.load`` reads them back without a pickled copy).
        What derives from them is left out and rebuilt on load: ``weights`` (a view of ``block_weights``, which
        pickle would store as a second copy), the ``record`` and the bias view cache."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("weights", "record", "_bias_view")}
        return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}

    def __setstate__(self, state: dict) -> None:
        """Unpickled: numpy views of the stored tensors (no copy), ``weights`` and the record rebuilt from them
        exactly as programming built them, so the outputs are bit-identical to the saved instance's."""
        self.__dict__.update({k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state.items()})
        self.weights = self.block_weights.reshape(-1, self.grid.out_features)[: self.grid.in_features]
        self._bias_view = None
        self._periphery_constants()

    def quantize_inputs(self, x: np.ndarray, squares: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """DAC: x (B, in) float32 -> word-line values code / L in [-1, 1] as (R, B, rows), zero on padding
        rows; input scales s (B, R); (s code / L)^2 as (B, in), or empty."""
        grid = self.grid
        blocks = np.empty((grid.row_blocks, x.shape[0], grid.rows), dtype=np.float32)
        scales = np.empty((x.shape[0], grid.row_blocks), dtype=np.float32)
        volts_squared = np.empty((x.shape[0], grid.in_features), dtype=np.float32) if squares else _EMPTY2
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
        noise_key = call_key(self.seed, self._calls)
        x_np = (x.detach() if x.requires_grad else x).numpy()
        return torch.from_numpy(run_tiles(self.record, x_np, self._bias_array(bias), noise_key))

    def _bias_array(self, bias: torch.Tensor | None) -> np.ndarray:
        """A numpy view of the bias (N,) float32, or (0,): kept while it is the same tensor on the same memory
        (an in-place update shows through the view), since making one costs more than a narrow layer's kernel."""
        if bias is None:
            return _EMPTY1
        cached = self._bias_view
        if cached is None or cached[0] is not bias or cached[1] != bias.data_ptr():
            self._bias_view = cached = (bias, bias.data_ptr(), bias.detach().numpy())
        return cached[2]


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
