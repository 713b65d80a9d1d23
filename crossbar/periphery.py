"""DAC and ADC quantizers: the documented definition, in numpy (the fused numba kernels that run it on the
forward path are in ``crossbar.engine``).

The quantizer of ``bits`` signed bits with full scale f has ``L = 2**(bits-1) - 1`` levels per sign (one
code is unused, so zero is exact and the range is symmetric); in float32, in this order:

    code(y) = clip(rint(y * (L / f)), -L, L)          q(y) = code(y) * (f / L)

``rint`` rounds half to even. The DAC converts an input x with the input scale s as its full scale and puts
code(x) / L (in [-1, 1]) on the word lines; each tile column's ADC converts the tile output with that
column's full scale.
"""

from __future__ import annotations

import numpy as np


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
