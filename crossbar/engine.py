"""Runs one analog layer's tiles: DAC, tile products, ADC, noise and bias, in one compiled call per task.

A forward is one or more tasks, each a single call of ``layer_task_kernel`` (numba, no GIL) that converts its
input vectors (``dac_kernel``), multiplies the word-line values with each row block's cell weights and converts
the result with the ADC (``adc_accumulate_kernel``) while it is still in cache, then adds the noise and the
bias (``noise_bias_kernel``); no (row blocks x batch x columns) product is ever held in memory. The per-call
work in Python is a few lines: the record (``TileRecord``) holds everything else, prepared at programming time.

Products: a batch of at most LOOP_ROWS vectors (latency, token by token) or of at most SMALL_PRODUCTS
multiply-adds (narrow layers) is multiplied by loops that read each weight once for all its vectors, as a
matrix-vector product does; any other by one single-threaded BLAS call per row block (numba's, that is scipy's
OpenBLAS, held to one thread by ``one_blas_thread``): single-threaded BLAS calls leave no BLAS worker threads
spinning after a call, which would take the cores from the kernels that follow (and from the rest of the
model: a threaded BLAS here made a Mamba LM 3x slower). Tasks: with one thread, one task. With
T = ``torch.get_num_threads()`` > 1, a BLAS batch is cut into up to T blocks of at least MIN_TASK_ROWS input
vectors, a loop batch with enough work into T ranges of output columns; the calling thread runs one task, a
pool the others.

The same seed and thread count give the same bits. Another thread count may cut the BLAS products differently,
so the BLAS may round a tile output differently in its last bit; where that crosses an ADC decision level the
output moves by one ADC step (a few outputs in 10^4 to 10^5), and with per-cell read noise the rounding of
the variance product moves the noise by a few float32 ulps. The loops of small batches sum in one fixed order
whatever the cut. The noise draws are keyed by the element's position and never depend on the cut.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401 (the BLAS numba's np.dot calls: loaded before its thread count is found)
import torch
from threadpoolctl import ThreadpoolController

from crossbar.gaussian import normal_row

if TYPE_CHECKING:
    from crossbar.tiles import TileGrid

_EMPTY1 = np.zeros(0, dtype=np.float32)
_EMPTY2 = np.zeros((0, 0), dtype=np.float32)
# The fewest input vectors a task of a batch split gets: below it the products are too small (or, for a few
# vectors, bound by reading the weights) for a second single-threaded task to pay off.
MIN_TASK_ROWS = 16

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
    edges = [_round_half_even(batch * k, parts) for k in range(parts + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, ties to even (as numpy's round), in integers."""
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (2 * remainder > denominator or (2 * remainder == denominator and quotient % 2 == 1))


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
    ``n_levels`` = 0 gives out = x / s without rounding. volts_squared: (B, n), to receive (s * out)^2, the
    squared converted inputs, or (0, 0) to skip.
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
                squared = volts_squared[b, start:stop]
                for i in range(used):
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
    ``block_weights`` (R, rows, N) float32, C-contiguous: effective weights, padding rows zero;
    ``dac_levels``, ``adc_levels``: levels per sign (``crossbar.periphery.levels``; 0: no quantization);
    ``dac_range``: the fixed DAC full scale, or -1 for a per-vector (dynamic) range;
    ``to_code``, ``from_code`` (R, N) float32: the ADC constants L / f and d f / L of every tile column
    (see ``adc_accumulate_kernel``); ``noise_scale`` (R, N) float32 or (0, 0): the output
    read-noise std in weight units; ``cell_variance`` (R * rows, N) float32 or None: per-cell read-noise variance.
    Derived once here, not per forward: ``cells``, the first ``in_features`` rows of ``cell_variance`` (or
    (0, 0)), and ``products``, the multiply-adds of one input vector (in_features x N).
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
    cells: np.ndarray = field(init=False, repr=False)
    products: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n_in = self.grid.in_features
        cells = _EMPTY2 if self.cell_variance is None else np.ascontiguousarray(self.cell_variance[:n_in])
        object.__setattr__(self, "cells", cells)
        object.__setattr__(self, "products", n_in * self.grid.out_features)


def convert_inputs(
    tiles: TileRecord, x: np.ndarray, blocks: np.ndarray, scales: np.ndarray, volts_squared: np.ndarray
) -> None:
    """DAC of x (m, in) float32 into views of the word-line values blocks (R, m, rows), input scales (m, R)
    and, unless empty, the squared inputs (m, in); a NaN or an infinity raises ValueError."""
    x = np.ascontiguousarray(x, dtype=np.float32)  # the kernel reads the bit patterns of x's rows
    if dac_kernel(x, tiles.dac_levels, tiles.dac_range, blocks, scales, volts_squared):
        raise ValueError(_NOT_FINITE)


_NOT_FINITE = "analog layer: input contains NaN or inf; the DAC cannot convert it"
# A batch of at most LOOP_ROWS vectors, or of at most SMALL_PRODUCTS multiply-adds, is multiplied by loops over
# the weights (each weight row read once for all vectors, as a matrix-vector product is; no BLAS call and its
# thread setting to pay for); anything else goes through BLAS.
LOOP_ROWS = 8
SMALL_PRODUCTS = 1 << 18
# A loop batch is cut by output columns into tasks when it has at least this many multiply-adds: a thread
# hand-off costs 100-170 us on this project's 2-core VM, which a cut repays only from about 4 M multiply-adds (measured
# at batch 1 on two threads: 1024 x 1024 249 us cut against 76 us not; 2048 x 2048 581 against 953 us).
COLUMN_SPLIT_PRODUCTS = 1 << 22


@numba.njit(nogil=True, cache=True)
def rows_times_matrix(values: np.ndarray, matrix: np.ndarray, k: int, c0: int, c1: int, out: np.ndarray) -> None:
    """out (m, c1 - c0) = values[:, :k] @ matrix[:k, c0:c1] for a few vectors (values (m, >= k), matrix
    (>= k, N), float32), each element summed over i = 0 .. k - 1 in order, in float32, one row of the matrix
    read once for all m vectors, four rows per pass over out (the same sums, a quarter of the loads and
    stores); rows whose values are all zero are skipped (adding +-0 leaves such a sum unchanged)."""
    m, width = out.shape
    out[:] = 0.0
    i = 0
    while i + 4 <= k:
        r0, r1, r2, r3 = matrix[i, c0:c1], matrix[i + 1, c0:c1], matrix[i + 2, c0:c1], matrix[i + 3, c0:c1]
        for b in range(m):
            v0, v1, v2, v3 = values[b, i], values[b, i + 1], values[b, i + 2], values[b, i + 3]
            if v0 == 0.0 and v1 == 0.0 and v2 == 0.0 and v3 == 0.0:
                continue
            total = out[b]
            for j in range(width):
                total[j] = (((total[j] + v0 * r0[j]) + v1 * r1[j]) + v2 * r2[j]) + v3 * r3[j]
        i += 4
    for last in range(i, k):
        row = matrix[last, c0:c1]
        for b in range(m):
            v = values[b, last]
            if v != 0.0:
                total = out[b]
                for j in range(width):
                    total[j] += v * row[j]


@numba.njit(nogil=True, cache=True)
def layer_task_kernel(
    x: np.ndarray,
    weights: np.ndarray,
    to_code: np.ndarray,
    from_code: np.ndarray,
    noise_scale: np.ndarray,
    cells: np.ndarray,
    bias: np.ndarray,
    dac_levels: int,
    dac_range: float,
    adc_levels: int,
    noise_key: np.uint64,
    loops: bool,
    b0: int,
    c0: int,
    c1: int,
    out: np.ndarray,
) -> int:
    """One task of a forward: output columns c0:c1 of input vectors x (m, in) float32 (rows b0 .. b0 + m of
    the batch), DAC, tile products, ADC, noise and bias in one call, into out (m, N); returns the number of
    slices holding a NaN or an infinity (then out is not written).

    With ``loops`` the products are loops (``rows_times_matrix``), any column range; else one BLAS product
    per row block (np.dot: numba's BLAS, one call per block of the whole width, c0 = 0 and c1 = N), each
    converted by the ADC while in cache; with per-cell noise (cells (in, N), else (0, 0)), one more product of
    the squared inputs with the cell variances. The arrays are those of ``TileRecord``; the noise is keyed by
    the element's position, so any cut of the output gets the same draws. One thread, no GIL.
    """
    m, n_in = x.shape
    n_blocks, block, _ = weights.shape
    width = c1 - c0
    with_cells = cells.shape[0] > 0
    lines = np.empty((n_blocks, m, block if n_blocks > 1 else n_in), dtype=np.float32)  # one block: no padding
    scales = np.empty((m, n_blocks), dtype=np.float32)
    squares = np.empty((m, n_in) if with_cells else (0, 0), dtype=np.float32)
    bad = dac_kernel(x, dac_levels, dac_range, lines, scales, squares)
    if bad:
        return bad
    acc = np.empty((m, width), dtype=np.float32)  # contiguous, so that the loops over columns vectorise
    product = np.zeros((m, width), dtype=np.float32)
    variance = np.zeros((m, width) if with_cells else (0, 0), dtype=np.float32)
    for r in range(n_blocks):
        used = min(block, n_in - r * block)
        if loops:
            rows_times_matrix(lines[r], weights[r], used, c0, c1, product)
        elif used == lines.shape[2]:
            np.dot(lines[r], weights[r, :used], product)
        else:  # the last row block, short: its used word lines, contiguous (row copies, fast where
            short = np.empty((m, used), dtype=np.float32)  # numba's ascontiguousarray is not)
            for b in range(m):
                short[b] = lines[r, b, :used]
            np.dot(short, weights[r, :used], product)
        adc_accumulate_kernel(product, to_code[r, c0:c1], from_code[r, c0:c1], adc_levels, scales[:, r], acc, r == 0)
    if with_cells:
        if loops:
            rows_times_matrix(squares, cells, n_in, c0, c1, variance)
        else:
            np.dot(squares, cells, variance)
    noise = np.ascontiguousarray(noise_scale[:, c0:c1])
    noise_bias_kernel(acc, scales, noise, variance, noise_key, b0, c0, bias[c0:c1])
    for b in range(m):  # row by row: numba copies a 2-D strided slice element by element
        out[b, c0:c1] = acc[b]
    return 0


def column_split(width: int, parts: int) -> list[tuple[int, int]]:
    """Cut ``width`` output columns into at most ``parts`` near-equal ranges, edges on multiples of 16."""
    edges = sorted({min(width, 16 * round(width * k / parts / 16)) for k in range(parts + 1)} | {0, width})
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def run_tiles(tiles: TileRecord, x: np.ndarray, bias: np.ndarray, noise_key: np.uint64) -> np.ndarray:
    """The layer output (B, N) float32 of inputs x (B, in) float32 on the programmed ``tiles``; bias (N,) or (0,).

    With per-cell read noise the variance sum_i (s x_q)_i^2 sigma_ij^2 takes one more product,
    over all rows at once. With y_rb the tile outputs of row block r for vector b and z the draws of ``noise_key``:

        out[b, j] = sum_r s_br from_code_rj code(y_rbj) + sqrt(sum_r (s_br n_rj)^2 + cell_var_bj) z_bj + bias_j

    Tasks (``layer_task_kernel``, one per thread, ``torch.get_num_threads()``): blocks of at least
    MIN_TASK_ROWS input vectors (``split``) for BLAS products; for products by loops (at most LOOP_ROWS vectors
    or SMALL_PRODUCTS multiply-adds: the choice depends on the batch, never on the threads), ranges of output
    columns when there is enough work; anything else is one task on the calling thread.
    """
    batch, width = x.shape[0], tiles.grid.out_features
    x = np.ascontiguousarray(x, dtype=np.float32)  # the DAC reads the bit patterns of x's rows
    out = np.empty((batch, width), dtype=np.float32)
    threads = torch.get_num_threads()
    args = (tiles.block_weights, tiles.to_code, tiles.from_code, tiles.noise_scale, tiles.cells, bias)
    loops = batch <= LOOP_ROWS or batch * tiles.products <= SMALL_PRODUCTS
    args += (tiles.dac_levels, tiles.dac_range, tiles.adc_levels, noise_key, loops)
    if loops:  # no BLAS: cut by columns when there is enough work
        if threads == 1 or batch * tiles.products < COLUMN_SPLIT_PRODUCTS:
            if layer_task_kernel(x, *args, 0, 0, width, out):
                raise ValueError(_NOT_FINITE)
            return out
        tasks = [(x, out, 0, c0, c1) for c0, c1 in column_split(width, threads)]
    else:
        tasks = [(x[rows], out[rows], rows.start, 0, width) for rows in split(batch, threads)]

    def task(x_part: np.ndarray, out_part: np.ndarray, b0: int, c0: int, c1: int) -> int:
        return layer_task_kernel(x_part, *args, b0, c0, c1, out_part)

    with contextlib.nullcontext() if loops else one_blas_thread():
        pending = [_workers(len(tasks)).submit(task, *t) for t in tasks[1:]]
        bad = 0
        try:
            bad = task(*tasks[0])
        finally:
            bad += sum(future.result() for future in pending)
    if bad:
        raise ValueError(_NOT_FINITE)
    return out
