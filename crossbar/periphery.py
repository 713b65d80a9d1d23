"""DAC and ADC quantizers: the documented definition in numpy, and the fused numba kernels that run it.

The quantizer of ``bits`` signed bits with full scale f has ``L = 2**(bits-1) - 1`` levels per sign (one
code is unused, so zero is exact and the range is symmetric); in float32, in this order:

    code(y) = clip(rint(y * (L / f)), -L, L)          q(y) = code(y) * (f / L)

``rint`` rounds half to even. The DAC converts an input x with the input scale s as its full scale and puts
code(x) / L (in [-1, 1]) on the word lines; each tile column's ADC converts the tile output with that
column's full scale.
"""

from __future__ import annotations

import numba
import numpy as np

from crossbar.gaussian import normal_row


def levels(bits: int | None) -> int:
    """Levels per sign, L = 2**(bits-1) - 1; 0 means no quantization."""
    return 0 if not bits else 2 ** (bits - 1) - 1


def quantize_reference(values: np.ndarray, full_scale: np.ndarray | float, bits: int | None) -> np.ndarray:
    """q(y) = code(y) * (f / L) in plain numpy float32, in the order stated above (no quantization when
    ``bits`` is None): the reference the kernels are tested against, and the digital tile's quantizer."""
    values = np.asarray(values, dtype=np.float32)
    if not bits:
        return values
    n = np.float32(levels(bits))
    full_scale = np.asarray(full_scale, dtype=np.float32)
    return np.clip(np.rint(values * (n / full_scale)), -n, n) * (full_scale / n)


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
