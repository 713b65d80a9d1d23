"""Standard normal draws inside numba kernels: counter based, so reproducible for any thread count.

Draw k of a stream ``key`` starts from its own state, ``mix64(key ^ (k * C))``, and needs no shared
generator: element (b, j) of a forward pass always gets the same number for the same key, whichever thread
computes it. States advance by the splitmix64 sequence; the normal variate comes from Marsaglia and Tsang's
ziggurat (J. Stat. Softw. 5(8), 2000) with 128 layers, exact up to the 32-bit resolution of its abscissa,
taking the layer index from bits other than the abscissa's (the fix of Doornik 2005 for the original's
correlation). Cheaper than torch.randn here and free of a (B, N) noise array when drawn inside a kernel.
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


@numba.njit(inline="always")
def _abscissa(h: np.uint64) -> tuple[int, float]:
    """Layer index (low 7 bits) and signed 32-bit abscissa (high 32 bits) of one hash."""
    return int(h & np.uint64(127)), float(np.int64(h >> np.uint64(32)) - 2147483648)


@numba.njit(inline="always")
def standard_normal(state: np.uint64) -> float:
    """One N(0, 1) draw from a stream state (the fast path inline, about 99% of draws)."""
    h = mix64(state + _GOLDEN)
    iz, hz = _abscissa(h)
    if abs(hz) < _KN[iz]:
        return hz * _WN[iz]
    return _slow_path(state + _GOLDEN, iz, hz)


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
    """out (n,) float64 <- draws 0..n-1 of stream ``key`` (for tests and other callers outside kernels)."""
    for k in numba.prange(out.shape[0]):
        out[k] = standard_normal(stream_start(key, np.uint64(k)))
