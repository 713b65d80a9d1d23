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

from crossbar.gaussian import normal_pair, row_state


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


@numba.njit(parallel=True, cache=True)
def dac_kernel(
    x: np.ndarray,
    block: int,
    n_levels: int,
    fixed_scale: float,
    out: np.ndarray,
    scales: np.ndarray,
    volts_squared: np.ndarray,
) -> int:
    """Quantize each input vector, one scale per tile row block; returns the number of slices holding a NaN
    or an infinity (the caller raises instead of converting them).

    x, out: (B, n) float32; scales: (B, R) float32 with R = ceil(n / block), written with the input scale s of
    each vector's slice for each row block (``fixed_scale`` if > 0, else its max|x|, or 1 for an all-zero
    slice: each tile's DAC uses its full range, as aihwkit's ABS_MAX noise management per tile).
    out = code(x; s) / L, so that x ~= s * out; ``n_levels`` = 0 gives out = x / s without rounding.
    volts_squared: (B, n) to receive (s * out)^2, the squared converted inputs, or (0, 0) to skip.
    """
    batch, width = x.shape
    n_blocks = scales.shape[1]
    want_squares = volts_squared.shape[0] > 0
    bad = 0
    for b in numba.prange(batch):
        for r in range(n_blocks):
            start, stop = r * block, min((r + 1) * block, width)
            peak = np.float32(0.0)
            probe = np.float32(0.0)  # x * 0 is NaN for a NaN or an infinity, 0 otherwise
            for i in range(start, stop):
                peak = max(peak, abs(x[b, i]))
                probe += x[b, i] * np.float32(0.0)
            if probe != 0.0:
                bad += 1
            s = np.float32(fixed_scale)
            if fixed_scale <= 0.0:
                s = peak if peak > 0.0 else np.float32(1.0)
            scales[b, r] = s
            if n_levels == 0:
                for i in range(start, stop):
                    out[b, i] = x[b, i] / s
            else:
                lv = np.float32(n_levels)
                to_code = lv / s
                step = np.float32(1.0) / lv
                for i in range(start, stop):
                    out[b, i] = min(max(np.rint(x[b, i] * to_code), -lv), lv) * step
            if want_squares:
                for i in range(start, stop):
                    v = s * out[b, i]
                    volts_squared[b, i] = v * v
    return bad


@numba.njit(parallel=True, cache=True)
def adc_accumulate_kernel(
    tile_out: np.ndarray,
    to_code: np.ndarray,
    from_code: np.ndarray,
    n_levels: int,
    input_scale: np.ndarray,
    noise_scale: np.ndarray,
    cell_var: np.ndarray,
    noise_key: np.uint64,
    bias: np.ndarray,
    out: np.ndarray,
) -> None:
    """ADC-convert every tile output, undo the scales, sum the row blocks, add noise and bias.

    tile_out: (R, B, N) float32, the tile outputs in cell currents. to_code = L / f and from_code = d f / L,
    (R, N), for each tile column's ADC full scale f and digital (weight) scale d; with ``n_levels`` = 0 (no
    quantization) from_code is d and to_code is unused. input_scale: (B, R), the DAC scale of each row block.
    noise_scale: (R, N), the output-noise std of each tile column times d, or (0, 0) for none; cell_var:
    (B, N), the per-cell read-noise variance in output units, or (0, 0) for none; noise_key: the stream of
    this forward's standard normal draws z (``crossbar.gaussian``); bias: (N,) or (0,). out: (B, N) float32,

        out[b, j] = sum_r s_br from_code_rj code(y_rbj) + sqrt(sum_r (s_br n_rj)^2 + cell_var_bj) z_bj + bias_j
    """
    n_blocks, batch, width = tile_out.shape
    has_output_noise = noise_scale.shape[0] > 0
    has_cell = cell_var.shape[0] > 0
    has_bias = bias.shape[0] > 0
    lv = np.float32(n_levels)
    for b in numba.prange(batch):
        acc = out[b]
        acc[:] = 0.0
        var = np.zeros(width if has_output_noise else 0, dtype=np.float32)
        for r in range(n_blocks):
            s = input_scale[b, r]
            if n_levels > 0:
                for j in range(width):
                    code = min(max(np.rint(tile_out[r, b, j] * to_code[r, j]), -lv), lv)
                    acc[j] += s * (from_code[r, j] * code)
            else:
                for j in range(width):
                    acc[j] += s * (from_code[r, j] * tile_out[r, b, j])
            if has_output_noise:
                for j in range(width):
                    c = s * noise_scale[r, j]
                    var[j] += c * c
        if has_output_noise or has_cell:
            for j in range(0, width, 2):
                z1, z2 = normal_pair(row_state(noise_key, np.uint64(b), np.uint64(j // 2)))
                for jj, z in ((j, z1), (j + 1, z2)):
                    if jj < width:
                        v = np.float32(0.0)
                        if has_output_noise:
                            v += var[jj]
                        if has_cell:
                            v += cell_var[b, jj]
                        acc[jj] += np.float32(np.sqrt(v) * z)
        if has_bias:
            for j in range(width):
                acc[j] += bias[j]
