"""Runs one analog layer's tiles: DAC, one BLAS product per row block and task, ADC, noise and bias.

The batch is cut into as many blocks of input vectors as there are threads (``torch.get_num_threads()``),
each at least MIN_TASK_ROWS long. Each block is a task on its own thread: it converts its input vectors
(``dac_kernel``), then, for every row block r, multiplies the word-line values with the
cell weights of that row block's tiles by a single-threaded BLAS call (numpy's, which releases the GIL) and
converts the result with the ADC kernel while it is still in cache; then it adds the noise and the bias.
Single-threaded BLAS calls leave no BLAS worker threads spinning after a call, which would take the cores
from the kernels that follow (and from the rest of the model: a threaded numpy BLAS here made a Mamba LM
3x slower). A batch too small to share runs as one task, with torch's threaded BLAS for all row blocks at
once, as the rest of a torch model does.
The same seed and thread count give the same bits. Another thread count cuts the products differently, so
the BLAS may round a tile output differently in its last bit; where that crosses an ADC decision level the
output moves by one ADC step (a few outputs in 10^4 to 10^5). The noise draws are keyed by the element's
position and never depend on the cut.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from crossbar.gaussian import normal_row

if TYPE_CHECKING:
    from crossbar.tiles import TileGrid

_EMPTY1 = np.zeros(0, dtype=np.float32)
_EMPTY2 = np.zeros((0, 0), dtype=np.float32)
# The fewest input vectors a task gets: below it the products are too small (or, for a few vectors, bound by
# reading the weights) for a second single-threaded task to pay off; the layer then runs as one task.
MIN_TASK_ROWS = 64

_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (threads it serves, the pool)
_openblas: list[tuple[ctypes._CFuncPtr, ctypes._CFuncPtr]] | None = None  # (get, set) num_threads of each OpenBLAS
_other_blas: ThreadpoolController | None = None  # MKL, BLIS: left to threadpoolctl
_blas_users = 0  # forwards now running with the BLAS held to one thread
_blas_saved: list[int] = []  # the thread counts they found


def _workers(threads: int) -> ThreadPoolExecutor:
    """A pool of ``threads - 1`` workers (the calling thread runs one task itself)."""
    global _pool
    with _lock:
        if _pool is None or _pool[0] != threads:
            if _pool is not None:
                _pool[1].shutdown(wait=False)
            _pool = (threads, ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="crossbar-tiles"))
        return _pool[1]


def _openblas_thread_controls() -> list[tuple[ctypes._CFuncPtr, ctypes._CFuncPtr]]:
    """``openblas_get_num_threads`` and ``openblas_set_num_threads`` of every loaded OpenBLAS (numpy's,
    scipy's), under any of their symbol prefixes and suffixes; found once."""
    global _openblas, _other_blas
    if _openblas is None:
        found = []
        libraries = ThreadpoolController().select(user_api="blas")
        _other_blas = libraries.select(internal_api=["mkl", "blis"])
        for library in libraries.select(internal_api="openblas").lib_controllers:
            for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
                get = getattr(library.dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
                put = getattr(library.dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                    found.append((get, put))
                    break
        _openblas = found
    return _openblas


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Hold OpenBLAS to one thread while any forward (of any Python thread) is in the block; the last to leave
    restores the thread counts the first one found.

    OpenBLAS's thread count is process-wide (its ``_local`` variant is too, in the pthreads builds numpy and
    scipy ship), and threadpoolctl 3.8 changes it only from the thread that changed it first, so the count is
    set here directly, counted under a lock. Other BLAS libraries (MKL, BLIS) are left to threadpoolctl.
    """
    global _blas_users, _blas_saved
    with _lock:
        controls = _openblas_thread_controls()
        if _blas_users == 0:
            _blas_saved = [get() for get, _ in controls]
            for _, put in controls:
                put(1)
        _blas_users += 1
    try:
        with _other_blas.limit(limits=1) if _other_blas.lib_controllers else contextlib.nullcontext():
            yield
    finally:
        with _lock:
            _blas_users -= 1
            if _blas_users == 0:
                for (_, put), count in zip(controls, _blas_saved, strict=True):
                    put(count)


def split(batch: int, parts: int) -> list[slice]:
    """Cut a batch into at most ``parts`` near-equal blocks of input vectors, each at least MIN_TASK_ROWS long
    (or into one block)."""
    parts = min(parts, batch // MIN_TASK_ROWS)
    if parts <= 1:
        return [slice(0, batch)]
    edges = np.linspace(0, batch, parts + 1).round().astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


# ------------------------------------------------------------------ the periphery kernels (numba, one thread)
# They implement the quantizer defined in ``crossbar.periphery`` (tests/test_periphery.py checks them against it).

_ABS_BITS = np.int32(0x7FFFFFFF)  # float32 |x| as its bit pattern; patterns above _INF_BITS are NaNs
_INF_BITS = np.int32(0x7F800000)


@numba.njit(nogil=True, cache=True)
def dac_kernel(
    x: np.ndarray,
    n_levels: int,
    fixed_scale: float,
    out: np.ndarray,
    scales: np.ndarray,
    volts_squared: np.ndarray,
) -> int:
    """Quantize each input vector, one scale per tile row block; returns the number of slices holding a NaN
    or an infinity (the caller raises instead of converting them).

    x: (B, n) float32, C-contiguous. out: (R, B, rows) float32 with R = ceil(n / rows), receiving each row
    block's slice of the vector, zero past n (the word lines of the tiles, row block by row block). scales:
    (B, R) float32, written with the input scale s of each vector's slice for each row block
    (``fixed_scale`` if > 0, else its max|x|, or 1 for an all-zero slice: each tile's DAC uses its full range,
    as aihwkit's ABS_MAX noise management per tile). out = code(x; s) / L, so that x ~= s * out;
    ``n_levels`` = 0 gives out = x / s without rounding. volts_squared: (B, R * rows), to receive (s * out)^2,
    the squared converted inputs, row block after row block (zero on unused word lines), or (0, 0) to skip.
    One thread, no GIL: ``crossbar.engine`` converts parts of a batch on several threads.
    """
    batch, width = x.shape
    n_blocks, _, block = out.shape
    want_squares = volts_squared.shape[0] > 0
    bits = x.view(np.int32)  # max|x| as the max of the bit patterns of |x|: an integer max, vectorised
    peak_bits = np.zeros(1, dtype=np.int32)
    peak = peak_bits.view(np.float32)
    bad = 0
    for b in range(batch):
        for r in range(n_blocks):
            start, stop = r * block, min((r + 1) * block, width)
            used = stop - start
            values, value_bits, line = x[b, start:stop], bits[b, start:stop], out[r, b]
            top = np.int32(0)  # (row views, not 2-D indexing, let the loops vectorise)
            for i in range(used):
                v = np.int32(value_bits[i] & _ABS_BITS)
                top = v if v > top else top
            if top >= _INF_BITS:
                bad += 1
            peak_bits[0] = top
            s = np.float32(fixed_scale)
            if fixed_scale <= 0.0:
                s = peak[0] if top > 0 else np.float32(1.0)
            scales[b, r] = s
            line[used:] = 0.0
            if n_levels == 0:
                for i in range(used):
                    line[i] = values[i] / s
            else:
                lv = np.float32(n_levels)
                to_code = lv / s
                step = np.float32(1.0) / lv
                for i in range(used):
                    line[i] = min(max(np.rint(values[i] * to_code), -lv), lv) * step
            if want_squares:
                squared = volts_squared[b, r * block : (r + 1) * block]
                for i in range(block):
                    v = s * line[i]
                    squared[i] = v * v
    return bad


@numba.njit(nogil=True, cache=True)
def adc_accumulate_kernel(
    product: np.ndarray,
    to_code: np.ndarray,
    from_code: np.ndarray,
    n_levels: int,
    input_scale: np.ndarray,
    acc: np.ndarray,
    first: bool,
) -> None:
    """ADC-convert one row block's tile outputs, undo the scales and add them to the layer output.

    product: (m, w) float32, the outputs of w tile columns for m input vectors, in cell currents.
    to_code = L / f and from_code = d f / L, (w,), for each column's ADC full scale f and digital (weight)
    scale d; with ``n_levels`` = 0 (no quantization) from_code is d and to_code is unused. input_scale: (m,),
    the DAC scale s of each vector's slice on this row block. acc (m, w): receives (``first``) or accumulates
    s from_code code(product). One thread, no GIL: ``crossbar.engine`` runs several at once.
    """
    m, width = product.shape
    lv = np.float32(n_levels)
    for b in range(m):
        s = input_scale[b]
        row, total = product[b], acc[b]
        if first:
            total[:] = 0.0
        if n_levels > 0:
            for j in range(width):
                code = min(max(np.rint(row[j] * to_code[j]), -lv), lv)
                total[j] += s * (from_code[j] * code)
        else:
            for j in range(width):
                total[j] += s * (from_code[j] * row[j])


@numba.njit(nogil=True, cache=True)
def noise_bias_kernel(
    acc: np.ndarray,
    input_scale: np.ndarray,
    noise_scale: np.ndarray,
    cell_variance: np.ndarray,
    noise_key: np.uint64,
    b0: int,
    j0: int,
    bias: np.ndarray,
) -> None:
    """acc (m, w) += sqrt(variance) z + bias, for the block of a (B, N) output whose corner is (b0, j0).

    variance = sum_r (s_br n_rj)^2 + cell_variance_bj, from the input scales s (m, R), the output-noise std
    noise_scale (R, w) of each tile column (or (0, 0) for none) and the per-cell read-noise variance (m, w)
    (or (0, 0)). z is the standard normal draw of element (b0 + b, j0 + j) of the stream ``noise_key``
    (``crossbar.gaussian``), so a block gets the draws the whole output would. bias: (w,) or (0,). One
    thread, no GIL.
    """
    m, width = acc.shape
    has_output_noise = noise_scale.shape[0] > 0
    has_cell = cell_variance.shape[0] > 0
    if has_output_noise or has_cell:
        z = np.empty(width, dtype=np.float32)
        hashes = np.empty(width, dtype=np.uint32)
        slow = np.empty(width + 1, dtype=np.int64)
        variance = np.empty(width, dtype=np.float32)
        for b in range(m):
            normal_row(noise_key, b0 + b, j0, z, hashes, slow)
            variance[:] = 0.0
            if has_output_noise:
                for r in range(noise_scale.shape[0]):
                    s2 = input_scale[b, r] * input_scale[b, r]
                    scale = noise_scale[r]
                    for j in range(width):
                        variance[j] += s2 * (scale[j] * scale[j])
            if has_cell:
                cell = cell_variance[b]
                for j in range(width):
                    variance[j] += cell[j]
            total = acc[b]
            for j in range(width):
                total[j] += np.sqrt(variance[j]) * z[j]
    if bias.shape[0] > 0:
        for b in range(m):
            total = acc[b]
            for j in range(width):
                total[j] += bias[j]


# ------------------------------------------------------------------------------------------ the forward pass


@dataclass(frozen=True, eq=False)
class TileRecord:
    """Everything the forward pass reads of one programmed layer: a plain, frozen record that
    ``crossbar.tiles.AnalogTiles`` builds after programming (and again after ADC calibration).

    Normalised units (weights and inputs in [-1, 1], outputs in cell currents):
    ``grid``: the layer's tile grid (R row blocks of ``rows`` word lines, N = out_features columns);
    ``block_weights`` (R, rows, N) float32: effective weights, padding rows zero;
    ``dac_levels``, ``adc_levels``: levels per sign (``crossbar.periphery.levels``; 0: no quantization);
    ``dac_range``: the fixed DAC full scale, or -1 for a per-vector (dynamic) range;
    ``to_code``, ``from_code`` (R, N) float32: the ADC constants L / f and d f / L of every tile column
    (see ``adc_accumulate_kernel``); ``noise_scale`` (R, N) float32 or (0, 0): the output
    read-noise std in weight units; ``cell_variance`` (R * rows, N) float32 or None: per-cell read-noise variance.
    """

    grid: TileGrid
    block_weights: np.ndarray
    dac_levels: int
    adc_levels: int
    dac_range: float
    to_code: np.ndarray
    from_code: np.ndarray
    noise_scale: np.ndarray
    cell_variance: np.ndarray | None


def convert_inputs(
    tiles: TileRecord, x: np.ndarray, blocks: np.ndarray, scales: np.ndarray, volts_squared: np.ndarray
) -> None:
    """DAC of x (m, in) float32 into views of the word-line values blocks (R, m, rows), input scales (m, R)
    and, unless empty, the squared inputs (m, R * rows); a NaN or an infinity raises ValueError."""
    x = np.ascontiguousarray(x, dtype=np.float32)  # the kernel reads the bit patterns of x's rows
    if dac_kernel(x, tiles.dac_levels, tiles.dac_range, blocks, scales, volts_squared):
        raise ValueError("analog layer: input contains NaN or inf; the DAC cannot convert it")


def run_tiles(tiles: TileRecord, x: np.ndarray, bias: np.ndarray, noise_key: np.uint64) -> np.ndarray:
    """The layer output (B, N) float32 of inputs x (B, in) float32 on the programmed ``tiles``; bias (N,) or (0,).

    With per-cell read noise the variance sum_i (s x_q)_i^2 sigma_ij^2 takes one more product,
    over all rows at once. With y_rb the tile outputs of row block r for vector b and z the draws of ``noise_key``:

        out[b, j] = sum_r s_br from_code_rj code(y_rbj) + sqrt(sum_r (s_br n_rj)^2 + cell_var_bj) z_bj + bias_j
    """
    grid = tiles.grid
    batch, width = x.shape[0], grid.out_features
    weights, noise_scale, cell_variance = tiles.block_weights, tiles.noise_scale, tiles.cell_variance
    n_levels = tiles.adc_levels
    with_cells = cell_variance is not None
    blocks = np.empty((grid.row_blocks, batch, grid.rows), dtype=np.float32)
    scales = np.empty((batch, grid.row_blocks), dtype=np.float32)
    volts_squared = np.empty((batch, grid.row_blocks * grid.rows), dtype=np.float32) if with_cells else _EMPTY2
    out = np.empty((batch, width), dtype=np.float32)
    n_in = grid.in_features
    used = [min(grid.rows, n_in - r * grid.rows) for r in range(grid.row_blocks)]  # word lines per row block
    parts = split(batch, torch.get_num_threads())

    def task(rows: slice, products: np.ndarray | None = None, cell_products: np.ndarray | None = None) -> None:
        """Input vectors ``rows`` of the output; ``products`` (R, B, N) and ``cell_products`` (B, N): all tile
        outputs and per-cell variances, when computed beforehand."""
        if products is None:
            squares = volts_squared[rows] if with_cells else _EMPTY2
            convert_inputs(tiles, x[rows], blocks[:, rows], scales[rows], squares)
        acc = out[rows]
        scratch = np.empty(acc.shape, dtype=np.float32) if products is None else _EMPTY2
        for r in range(grid.row_blocks):
            if products is None:  # the used word lines only (the last row block may be short)
                product = np.dot(blocks[r, rows, : used[r]], weights[r, : used[r]], out=scratch)
            else:
                product = products[r]
            adc_accumulate_kernel(product, tiles.to_code[r], tiles.from_code[r], n_levels, scales[rows, r], acc, r == 0)
        if cell_products is None and with_cells:
            cell_products = np.dot(volts_squared[rows, :n_in], cell_variance[:n_in])
        cell = _EMPTY2 if cell_products is None else cell_products
        noise_bias_kernel(acc, scales[rows], noise_scale, cell, noise_key, rows.start, 0, bias)

    if len(parts) == 1:  # too little work to share: torch's BLAS computes all row blocks at once, threaded
        convert_inputs(tiles, x, blocks, scales, volts_squared)
        products = torch.bmm(torch.from_numpy(blocks), torch.from_numpy(weights)).numpy()
        cells = (
            torch.from_numpy(volts_squared[:, :n_in]) @ torch.from_numpy(cell_variance[:n_in]) if with_cells else None
        )
        task(parts[0], products, None if cells is None else cells.numpy())
        return out
    with one_blas_thread():
        pending = [_workers(len(parts)).submit(task, part) for part in parts[1:]]
        try:
            task(parts[0])
        finally:
            for future in pending:
                future.result()
    return out
