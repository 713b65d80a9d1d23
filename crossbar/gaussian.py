"""Standard normal draws inside numba kernels: counter based, so reproducible for any thread count.

Draw j of row b of a stream ``key`` is a pure function of (key, b, j): row b gets a 32-bit start and an odd
32-bit increment from the splitmix64 hash of (key, b), and draw j hashes start + j * increment with a 32-bit
integer hash (two multiply-xorshift rounds: C. Wellons' lowbias32 from his "hash prospector"). Those 32 bits
feed Marsaglia and Tsang's ziggurat (J. Stat. Softw. 5(8), 2000) with 256 layers: an 8-bit layer index and
a 24-bit signed abscissa from separate bits (separate bits avoid the original's correlation, Doornik 2005).
The fast path, taken by about 98.5 % of draws, is a hash, a table lookup and a multiply, without a branch;
the wedge and tail steps of the others draw further uniforms from a 64-bit stream of their own. No generator
state is shared, so any block of a (B, N) array of draws can be computed by any thread and gets the same
numbers.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STREAM = np.uint64(0xD1B54A32D192ED03)
# Marsaglia and Tsang's 256-layer ziggurat: the start of the tail and the area of every layer.
_LAYERS = 256
_R = 3.6541528853610088
_AREA = 4.92867323399e-3


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ziggurat tables: acceptance thresholds kn (on |abscissa| in units of 2^-31), widths wn, f values fn."""
    m1 = 2147483648.0
    dn = tn = _R
    top = _LAYERS - 1
    kn, wn, fn = np.zeros(_LAYERS), np.zeros(_LAYERS), np.zeros(_LAYERS)
    q = _AREA / math.exp(-0.5 * dn * dn)
    kn[0], kn[1] = (dn / q) * m1, 0.0
    wn[0], wn[top] = q / m1, dn / m1
    fn[0], fn[top] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(top - 1, 0, -1):
        dn = math.sqrt(-2.0 * math.log(_AREA / dn + math.exp(-0.5 * dn * dn)))
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
def _abscissa(bits: np.uint64) -> tuple[int, float]:
    """Layer index (low 8 bits) and signed 24-bit abscissa (bits 8-31), in the 2^31 units of the tables."""
    iz = np.int64(bits & np.uint64(255))
    return iz, float(np.int64((bits >> np.uint64(8)) & np.uint64(0xFFFFFF)) - 8388608) * 256.0


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


# The fast path in 24-bit units: accept |hz| < _KN24[iz], then z = hz * _WN24[iz].
_KN24 = np.floor(_KN / 256.0).astype(np.int32)
_WN24 = (_WN * 256.0).astype(np.float32)
_M32 = np.uint64(0xFFFFFFFF)
_SLOW = np.uint64(0x5851F42D4C957F2D)  # separates the slow path's 64-bit stream from the row's start


@numba.njit(inline="always")
def hash32(x: np.uint32) -> np.uint32:
    """A bijective 32-bit integer hash (lowbias32: two multiply-xorshift rounds)."""
    x = np.uint32(x ^ (x >> np.uint32(16)))
    x = np.uint32(x * np.uint32(0x21F0AAAD))
    x = np.uint32(x ^ (x >> np.uint32(15)))
    x = np.uint32(x * np.uint32(0x735A2D97))
    return np.uint32(x ^ (x >> np.uint32(15)))


@numba.njit(inline="always")
def _layer_and_abscissa(h: np.uint32) -> tuple[np.int32, np.int32]:
    """Layer index (low 8 bits) and signed 24-bit abscissa (bits 8-31) of a 32-bit hash."""
    return np.int32(h & np.uint32(255)), np.int32(h) >> np.int32(8)


@numba.njit(cache=True)
def normal_row(key: np.uint64, row: int, first: int, z: np.ndarray, hashes: np.ndarray, slow: np.ndarray) -> None:
    """z (w,) float32 <- draws first, ..., first + w - 1 of row ``row`` of stream ``key``.

    hashes: (w,) uint32 and slow: (w + 1,) int64 scratch, for the hashes and the positions of the draws the
    fast path rejects.
    """
    h = mix64(key ^ (np.uint64(row) * _STREAM))
    start = np.uint32(np.uint32(h & _M32) + np.uint32(first) * np.uint32((h >> np.uint64(32)) | np.uint64(1)))
    step = np.uint32((h >> np.uint64(32)) | np.uint64(1))
    width = z.shape[0]
    for j in range(width):  # the hashes: 32-bit integer arithmetic only, vectorised
        hashes[j] = hash32(np.uint32(start + np.uint32(j) * step))
    n_slow = 0
    for j in range(width):  # the fast path for every draw, without a branch
        iz, hz = _layer_and_abscissa(hashes[j])
        z[j] = np.float32(hz) * _WN24[iz]
        slow[n_slow] = j
        n_slow += np.int64(abs(hz) >= _KN24[iz])
    if n_slow:
        state = stream_start(key ^ _SLOW, np.uint64(row))
        for k in range(n_slow):
            j = slow[k]
            iz, hz = _layer_and_abscissa(hashes[j])
            z[j] = _slow_path(state + np.uint64(first + j) * _GOLDEN, np.int64(iz), float(hz) * 256.0)


@numba.njit(parallel=True, cache=True)
def fill_standard_normal(key: np.uint64, out: np.ndarray) -> None:
    """out (rows, cols) float32 <- the draws of stream ``key``, exactly as the noise kernel makes them."""
    for b in numba.prange(out.shape[0]):
        normal_row(key, b, 0, out[b], np.empty(out.shape[1], np.uint32), np.empty(out.shape[1] + 1, np.int64))


# numpy's SeedSequence (O'Neill's seed_seq hash, pool of four 32-bit words), for the per-call noise keys.
_SEED_INIT_A, _SEED_MULT_A = np.uint64(0x43B0D7E5), np.uint64(0x931E8875)
_SEED_INIT_B, _SEED_MULT_B = np.uint64(0x8B51F9DD), np.uint64(0x58F38DED)
_SEED_MIX_L, _SEED_MIX_R = np.uint64(0xCA01F9DD), np.uint64(0x4973F715)


@numba.njit(cache=True)
def _seed_sequence_key(first: int, second: int) -> np.uint64:
    """The uint64 ``SeedSequence([first, second]).generate_state(1, np.uint64)[0]`` for two words < 2**32:
    numpy's mixing, step by step, in 32-bit arithmetic (as 64-bit integers masked to 32 bits)."""
    entropy = (np.uint64(first), np.uint64(second), np.uint64(0), np.uint64(0))
    pool = np.zeros(4, dtype=np.uint64)
    hash_const = _SEED_INIT_A

    def hashmix(value: np.uint64, hash_const: np.uint64) -> tuple[np.uint64, np.uint64]:
        value = value ^ hash_const
        hash_const = (hash_const * _SEED_MULT_A) & _M32
        value = (value * hash_const) & _M32
        return value ^ (value >> np.uint64(16)), hash_const

    for i in range(4):
        pool[i], hash_const = hashmix(entropy[i], hash_const)
    for src in range(4):
        for dst in range(4):
            if src != dst:
                mixed, hash_const = hashmix(pool[src], hash_const)
                result = (_SEED_MIX_L * pool[dst] - _SEED_MIX_R * mixed) & _M32
                pool[dst] = result ^ (result >> np.uint64(16))
    hash_const = _SEED_INIT_B
    words = np.zeros(2, dtype=np.uint64)
    for i in range(2):
        value = pool[i] ^ hash_const
        hash_const = (hash_const * _SEED_MULT_B) & _M32
        value = (value * hash_const) & _M32
        words[i] = value ^ (value >> np.uint64(16))
    return words[0] | (words[1] << np.uint64(32))


def call_key(seed: int, call: int) -> np.uint64:
    """The noise-stream key of forward number ``call`` of a chip instance ``seed``:
    ``np.random.SeedSequence([seed, call]).generate_state(1, np.uint64)[0]``, bit for bit, without the
    tens of microseconds numpy's SeedSequence takes per call (seed and call below 2**32; numpy's beyond)."""
    if 0 <= seed < 2**32 and 0 <= call < 2**32:
        return np.uint64(_seed_sequence_key(seed, call))
    return np.random.SeedSequence([seed, call]).generate_state(1, np.uint64)[0]
