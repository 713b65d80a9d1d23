"""DAC and ADC quantizers: the documented definition in numpy, and the fused numba kernels that run it.

The quantizer of ``bits`` signed bits over [-full_scale, full_scale] has ``L = 2**(bits-1) - 1`` levels
per sign (one code is unused, so zero is exact and the range is symmetric):

    q(y) = clip(rint(y / full_scale * L), -L, L) * full_scale / L

``rint`` rounds half to even. The DAC applies it to x / s with full scale 1, s being the input scale; each
tile column's ADC applies it to the tile output with that column's full scale.
"""

from __future__ import annotations

import numba
import numpy as np

NO_BITS = 0  # kernels take bits=0 for "no quantization"


def levels(bits: int | None) -> int:
    """Levels per sign, L = 2**(bits-1) - 1; 0 means no quantization."""
    return 0 if not bits else 2 ** (bits - 1) - 1


def quantize_reference(values: np.ndarray, full_scale: np.ndarray | float, bits: int | None) -> np.ndarray:
    """The documented quantizer in plain numpy, the reference the kernels are tested against.

    Computes in the dtype of ``values`` (float32 in the simulator) in the order of the formula above, so
    that a kernel that implements the same quantizer agrees bit for bit.
    """
    values = np.asarray(values)
    if not bits:
        return values
    n = values.dtype.type(levels(bits))
    full_scale = np.asarray(full_scale, dtype=values.dtype)
    return np.clip(np.rint(values / full_scale * n), -n, n) * (full_scale / n)


@numba.njit(parallel=True, cache=True, fastmath=False)
def dac_kernel(
    x: np.ndarray, block: int, n_levels: int, fixed_scale: float, out: np.ndarray, scales: np.ndarray
) -> None:
    """Quantize each input vector, one scale per tile row block.

    x, out: (B, n) float32; scales: (B, R) float32 with R = ceil(n / block), written with the input scale s of
    each vector's slice for each row block (``fixed_scale`` if > 0, else its max|x|, or 1 for an all-zero
    slice: each tile's DAC uses its full range, as aihwkit's ABS_MAX noise management per tile).
    out = q(x / s) with full scale 1, so that x ~= s * out. ``n_levels`` = 0 skips the rounding.
    """
    batch, width = x.shape
    n_blocks = scales.shape[1]
    for b in numba.prange(batch):
        for r in range(n_blocks):
            start, stop = r * block, min((r + 1) * block, width)
            s = fixed_scale
            if s <= 0.0:
                s = 0.0
                for i in range(start, stop):
                    s = max(s, abs(x[b, i]))
                if s == 0.0:
                    s = 1.0
            s32 = np.float32(s)
            scales[b, r] = s32
            if n_levels == 0:
                for i in range(start, stop):
                    out[b, i] = x[b, i] / s32
            else:
                lv = np.float32(n_levels)
                step = np.float32(1.0) / lv
                for i in range(start, stop):
                    code = min(max(np.rint(x[b, i] / s32 * lv), -lv), lv)
                    out[b, i] = code * step


@numba.njit(parallel=True, cache=True, fastmath=False)
def adc_accumulate_kernel(
    tile_out: np.ndarray,
    full_scale: np.ndarray,
    n_levels: int,
    digital_scale: np.ndarray,
    input_scale: np.ndarray,
    output_var: float,
    cell_var: np.ndarray,
    normal: np.ndarray,
    bias: np.ndarray,
    out: np.ndarray,
) -> None:
    """ADC-convert every tile output, undo the scales, sum the row blocks, add noise and bias.

    tile_out: (R, B, N) float32, the tile outputs in cell currents; full_scale, digital_scale: (R, N);
    input_scale: (B, R), the DAC scale of each row block; output_var: variance of the output noise of one tile
    output, cell currents squared; cell_var: (B, N) per-cell read-noise variance in output units, or (0, 0)
    for none; normal: (B, N) standard normal draws, or (0, 0) for no noise; bias: (N,) or (0,).
    out: (B, N) float32, with c_rbj = d_rj s_br,

        out[b, j] = sum_r c_rbj q(y_rbj; f_rj) + sqrt(output_var sum_r c_rbj^2 + cell_var_bj) z_bj + bias_j
    """
    n_blocks, batch, width = tile_out.shape
    has_cell = cell_var.shape[0] > 0
    has_noise = normal.shape[0] > 0
    has_bias = bias.shape[0] > 0
    lv = np.float32(n_levels)
    for b in numba.prange(batch):
        for j in range(width):
            out[b, j] = 0.0
        for r in range(n_blocks):
            s = input_scale[b, r]
            for j in range(width):
                y = tile_out[r, b, j]
                if n_levels > 0:
                    fs = full_scale[r, j]
                    code = min(max(np.rint(y / fs * lv), -lv), lv)
                    y = code * (fs / lv)
                out[b, j] += digital_scale[r, j] * s * y
        if has_noise:
            for j in range(width):
                var = np.float32(0.0)
                for r in range(n_blocks):
                    c = digital_scale[r, j] * input_scale[b, r]
                    var += c * c
                var *= output_var
                if has_cell:
                    var += cell_var[b, j]
                out[b, j] += np.sqrt(var) * normal[b, j]
        if has_bias:
            for j in range(width):
                out[b, j] += bias[j]
