"""Standard normal draws inside numba kernels: counter based, so reproducible for any thread count.

Row b of a stream ``key`` starts from its own state, ``mix64(key ^ (b * C))``, and its pairs of draws follow
by Weyl steps hashed with the splitmix64 finaliser, so no generator is shared: element (b, j) of a forward pass
always gets the same number for the same key, whichever thread computes it. Each 64-bit hash feeds two
normal variates by Marsaglia and Tsang's ziggurat (J. Stat. Softw. 5(8), 2000) with 128 layers: per draw a
7-bit layer index and a 24-bit abscissa from separate bits (separate bits avoid the original's correlation,
Doornik 2005); the rare wedge and tail steps draw further uniforms from their own salted states. Cheaper
than torch.randn here, and free of a (B, N) noise array when drawn inside a kernel.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STREAM = np.uint64(0xD1B54A32D192ED03)
_R = 3.442619855899  # start of the tail


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ziggurat tables: acceptance thresholds kn (on |abscissa| in units of 2^-31), widths wn, f values fn."""
    m1 = 2147483648.0
    dn = tn = _R
    vn = 9.91256303526217e-3
    kn, wn, fn = np.zeros(128), np.zeros(128), np.zeros(128)
    q = vn / math.exp(-0.5 * dn * dn)
    kn[0], kn[1] = (dn / q) * m1, 0.0
    wn[0], wn[127] = q / m1, dn / m1
    fn[0], fn[127] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = (dn / tn) * m1
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


_KN, _WN, _FN = _tables()


@numba.njit(inline="always")
def mix64(z: np.uint64) -> np.uint64:
    """The splitmix64 finaliser: a bijective 64-bit hash."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(inline="always")
def stream_start(key: np.uint64, index: np.uint64) -> np.uint64:
    """The state of draw ``index`` of stream ``key``."""
    return mix64(key ^ (index * _STREAM))


@numba.njit(inline="always")
def _next(state: np.uint64) -> tuple[np.uint64, np.uint64]:
    state = state + _GOLDEN
    return state, mix64(state)


@numba.njit(inline="always")
def _uniform(state: np.uint64) -> tuple[np.uint64, float]:
    state, h = _next(state)
    return state, ((h >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)  # in (0, 1)


_SALT = (np.uint64(0x5851F42D4C957F2D), np.uint64(0x14057B7EF767814F))  # separate the two draws' slow paths


@numba.njit(inline="always")
def _abscissa(bits: np.uint64) -> tuple[int, float]:
    """Layer index (low 7 bits) and signed 24-bit abscissa (bits 8-31), in the 2^31 units of the tables."""
    iz = int(bits & np.uint64(127))
    return iz, float(np.int64((bits >> np.uint64(8)) & np.uint64(0xFFFFFF)) - 8388608) * 256.0


@numba.njit(inline="always")
def _one(h: np.uint64, state: np.uint64) -> float:
    iz, hz = _abscissa(h)
    if abs(hz) < _KN[iz]:  # the fast path, about 99% of draws
        return hz * _WN[iz]
    return _slow_path(state, iz, hz)


@numba.njit(inline="always")
def normal_pair(state: np.uint64) -> tuple[float, float]:
    """Two independent N(0, 1) draws from one stream state: one 64-bit hash feeds both fast paths."""
    h = mix64(state)
    return _one(h, state ^ _SALT[0]), _one(h >> np.uint64(32), state ^ _SALT[1])


@numba.njit(inline="always")
def row_state(key: np.uint64, row: np.uint64, pair: np.uint64) -> np.uint64:
    """The state of pair ``pair`` of row ``row`` of stream ``key``: a Weyl step from the row's own start."""
    return stream_start(key, row) + pair * _GOLDEN


@numba.njit(cache=True)
def _slow_path(state: np.uint64, iz: int, hz: float) -> float:
    """The ziggurat's rejection steps: the wedges and the tail."""
    while True:
        x = hz * _WN[iz]
        if iz == 0:  # the tail beyond _R, by Marsaglia's exponential method
            while True:
                state, u1 = _uniform(state)
                state, u2 = _uniform(state)
                x = -math.log(u1) / _R
                if -2.0 * math.log(u2) >= x * x:
                    break
            return (_R + x) if hz > 0 else -(_R + x)
        state, u = _uniform(state)
        if _FN[iz] + u * (_FN[iz - 1] - _FN[iz]) < math.exp(-0.5 * x * x):
            return x
        state, h = _next(state)
        iz, hz = _abscissa(h)
        if abs(hz) < _KN[iz]:
            return hz * _WN[iz]


@numba.njit(parallel=True, cache=True)
def fill_standard_normal(key: np.uint64, out: np.ndarray) -> None:
    """out (rows, cols) float64 <- the draws of stream ``key`` exactly as the ADC kernel makes them."""
    rows, cols = out.shape
    for b in numba.prange(rows):
        for j in range(0, cols, 2):
            z1, z2 = normal_pair(row_state(key, np.uint64(b), np.uint64(j // 2)))
            out[b, j] = z1
            if j + 1 < cols:
                out[b, j + 1] = z2
