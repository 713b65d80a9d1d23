"""IR drop: the exact resistive network of a crossbar array, and its effective conductance matrix.

The circuit (one array; a differential pair is two of them). Rows i = 0..R-1 are word lines driven at their
left end by V[i]; columns j = 0..C-1 are bit lines sensed at their bottom end by a virtual-ground amplifier
(0 V). Cell (i, j) is a conductance G[i, j] (siemens) between word-line node (i, j) and bit-line node (i, j).
Word-line wire: ``r_wl`` ohms from the driver to node (i, 0) and between (i, j) and (i, j+1). Bit-line wire:
``r_bl`` ohms between (i, j) and (i+1, j), and from (R-1, j) to the amplifier. Output: the current into each
amplifier, amperes. With r_wl = r_bl = 0 it is exactly V @ G.

The network is linear, so the outputs are I = V @ M for an effective matrix M (R x C) that depends only on G
and the wires. ``effective_conductance`` computes M once (block elimination, below); ``solve`` is the
independent reference: a sparse direct solve of the full nodal system for a batch of inputs.

How M is computed (``_nested_dissection``). M is minus the block of the network's Schur complement that
couples the drivers to the amplifiers. Split the array recursively into halves, alternating the direction so
blocks stay square; each block is reduced to the dense Schur complement of its Laplacian onto the nodes by
which it touches its neighbours (at most 2h + 2w of them), and two neighbours merge by eliminating the nodes
they share (a Cholesky factorization of that separator, a triangular solve and a symmetric rank update).
Nodes at the open ends of the wires (the far end of each word line and of each bit line) are eliminated as
soon as a block reaches them; the last merge forms only the drivers x amplifiers block (a GEMM), never the
drivers' or the amplifiers' own blocks. Cost O(N^3) for an N x N array, in float64, on one thread:
- the lower levels (blocks up to 16 x 32 sites) run depth first in numba, _LANES blocks side by side in the
  last axis of every array (the innermost loop of every step runs over them), each group of blocks built
  from its sites and merged to the top of its subtree while its data are in cache;
- the merges above go through LAPACK dpotrf and BLAS dtrsm / dsyrk (one thread, in place, Fortran order);
  a numba kernel gathers each merge's separator, coupling and kept blocks in one pass over the upper
  triangles of the two blocks (the blocks keep only their upper triangles; nothing is mirrored).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numba
import numba.core.config
import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg

from crossbar.engine import one_blas_thread


def _check_network(conductances: np.ndarray, r_wl: float, r_bl: float) -> np.ndarray:
    g = np.asarray(conductances, dtype=np.float64)
    if g.ndim != 2 or 0 in g.shape:
        raise ValueError(f"irdrop: conductances must be a non-empty (rows, cols) matrix, got shape {g.shape}")
    if not np.all(np.isfinite(g)) or np.any(g < 0):
        raise ValueError("irdrop: conductances must be finite and non-negative (siemens)")
    for name, value in (("r_wl", r_wl), ("r_bl", r_bl)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"irdrop: {name} must be a finite, non-negative resistance in ohms (got {value!r})")
    return g


@numba.njit(cache=True, nogil=True)
def _word_line_inverse(g_row: np.ndarray, gw: float) -> np.ndarray:
    """Dense inverse of one word line's matrix A = gw L + diag(g_row) (C x C), by the Thomas algorithm on the
    identity. L is the chain Laplacian with the driver at the left end: diagonal 2 (1 at the far end),
    off-diagonal -1. The forward sweep's right-hand sides stay lower triangular, so it costs O(C^2)."""
    cols = g_row.shape[0]
    diag = 2.0 * gw + g_row
    diag[cols - 1] -= gw
    c_prime = np.empty(cols)
    d_prime = np.zeros((cols, cols))
    denom = diag[0]
    c_prime[0] = -gw / denom
    d_prime[0, 0] = 1.0 / denom
    for j in range(1, cols):
        denom = diag[j] + gw * c_prime[j - 1]
        c_prime[j] = -gw / denom
        for k in range(j):
            d_prime[j, k] = gw * d_prime[j - 1, k] / denom
        d_prime[j, j] = 1.0 / denom
    inverse = np.empty((cols, cols))
    inverse[cols - 1] = d_prime[cols - 1]
    for j in range(cols - 2, -1, -1):
        for k in range(cols):
            inverse[j, k] = d_prime[j, k] - c_prime[j] * inverse[j + 1, k]
    return inverse


def effective_conductance(conductances: np.ndarray, r_wl: float, r_bl: float) -> np.ndarray:
    """The matrix M (R x C), siemens, with output currents I = V @ M for the network described above.

    conductances: G (R x C) siemens, non-negative; r_wl, r_bl: ohms per wire segment, non-negative.
    Runs on one thread (BLAS held to one thread while it runs, see ``crossbar.engine.one_blas_thread``).
    """
    g = _check_network(conductances, r_wl, r_bl)
    rows, cols = g.shape
    if r_wl == 0 and r_bl == 0:
        return g.copy()
    if r_bl == 0:  # bit lines at 0 V: each word line alone, driven by a unit input at its left end
        return np.stack([g[i] * _word_line_inverse(g[i], 1.0 / r_wl)[:, 0] / r_wl for i in range(rows)])
    gb = 1.0 / r_bl
    if r_wl == 0:  # word lines at V_i: each bit line alone. Read bottom-up, a bit line is a word line's chain
        # (the amplifier's wire plays the driver's), so I_j = gb * sum_i' inv[0, i'] G_i'j V_i' with i' = R-1-i.
        return np.stack(
            [gb * _word_line_inverse(g[::-1, j].copy(), gb)[0, ::-1] * g[:, j] for j in range(cols)], axis=1
        )
    with one_blas_thread():
        return _nested_dissection(g, 1.0 / r_wl, gb)


# ---------------------------------------------------------------- nested dissection (the general case)
# Sites (i, j) of an H x W grid (the array padded to powers of two, see _nested_dissection). A block of sites
# [i0, i0 + h) x [j0, j0 + w) owns its cells, the word-line wire on the left of each of its word-line nodes
# and the bit-line wire below each of its bit-line nodes. Its interface, in this order: L, the h word-line
# nodes just left of it (the drivers when j0 = 0); Rt, its own rightmost h word-line nodes; T, its own top w
# bit-line nodes; B, the w bit-line nodes just below it (the amplifiers when i0 + h = H). A block is the
# Schur complement of its Laplacian onto that interface (P x P, symmetric, siemens). Two neighbours share one
# side (A's Rt is B's L; the upper one's B is the lower one's T): their sum is eliminated onto the rest.


@numba.njit(cache=True, nogil=True)
def _site_laplacians(g: np.ndarray, gw: float, gb: float) -> np.ndarray:
    """(H * W, 4, 4) Laplacians of the single sites on [L, Rt, T, B]: wire gw, cell g[i, j], wire gb."""
    height, width = g.shape
    out = np.zeros((height * width, 4, 4))
    for i in range(height):
        for j in range(width):
            cell, site = g[i, j], out[i * width + j]
            site[0, 0], site[0, 1], site[1, 0] = gw, -gw, -gw
            site[1, 1], site[1, 2], site[2, 1] = gw + cell, -cell, -cell
            site[2, 2], site[2, 3], site[3, 2], site[3, 3] = cell + gb, -gb, -gb, gb
    return out


# The lower levels merge many small blocks at once, _LANES blocks side by side in the last axis of every array
# ((blocks, P, P, _LANES)): each step of the elimination works on the _LANES values of one entry, held in a
# tuple (the helpers below), which LLVM's SLP vectorizer turns into two AVX2 operations (``_vectorized``).
_LANES = 8


@numba.njit(inline="always")
def _get(a: np.ndarray, i: int, j: int) -> tuple:
    """The _LANES values of entry (i, j) of a (n, n, _LANES) array."""
    return (a[i, j, 0], a[i, j, 1], a[i, j, 2], a[i, j, 3], a[i, j, 4], a[i, j, 5], a[i, j, 6], a[i, j, 7])


@numba.njit(inline="always")
def _put(a: np.ndarray, i: int, j: int, v: tuple) -> None:
    a[i, j, 0], a[i, j, 1], a[i, j, 2], a[i, j, 3] = v[0], v[1], v[2], v[3]
    a[i, j, 4], a[i, j, 5], a[i, j, 6], a[i, j, 7] = v[4], v[5], v[6], v[7]


@numba.njit(inline="always")
def _add(u: tuple, v: tuple) -> tuple:
    return (u[0] + v[0], u[1] + v[1], u[2] + v[2], u[3] + v[3], u[4] + v[4], u[5] + v[5], u[6] + v[6], u[7] + v[7])


@numba.njit(inline="always")
def _mul(u: tuple, v: tuple) -> tuple:
    return (u[0] * v[0], u[1] * v[1], u[2] * v[2], u[3] * v[3], u[4] * v[4], u[5] * v[5], u[6] * v[6], u[7] * v[7])


@numba.njit(inline="always")
def _minus_product(acc: tuple, u: tuple, v: tuple) -> tuple:
    """acc - u * v, lane by lane (a product, then a difference: no fused multiply-add)."""
    return (
        acc[0] - u[0] * v[0],
        acc[1] - u[1] * v[1],
        acc[2] - u[2] * v[2],
        acc[3] - u[3] * v[3],
        acc[4] - u[4] * v[4],
        acc[5] - u[5] * v[5],
        acc[6] - u[6] * v[6],
        acc[7] - u[7] * v[7],
    )


@numba.njit(inline="always")
def _inverse_sqrt(u: tuple) -> tuple:
    return (
        1.0 / np.sqrt(u[0]),
        1.0 / np.sqrt(u[1]),
        1.0 / np.sqrt(u[2]),
        1.0 / np.sqrt(u[3]),
        1.0 / np.sqrt(u[4]),
        1.0 / np.sqrt(u[5]),
        1.0 / np.sqrt(u[6]),
        1.0 / np.sqrt(u[7]),
    )


@numba.njit(cache=True, nogil=True)
def _merge_lanes(blocks: np.ndarray, map_a: np.ndarray, map_b: np.ndarray, n: int, s: int) -> np.ndarray:
    """Merge block b with block b + count for every output block b (count = half the input blocks): place
    the two on n nodes (map_a, map_b; the s shared nodes first) and eliminate the shared ones.

    blocks: (2 * chunks, P, P, _LANES), block b in chunk b // _LANES, lane b % _LANES. Returns (chunks, n - s,
    n - s, _LANES). Elimination: Cholesky X = U^T U of the shared block, row k of U written over work row k
    (which makes its kept columns row k of Y^T = U^-T C), each entry accumulated in a register; then
    K - Y^T Y, each entry's sum over k in a register."""
    chunks, size, p = blocks.shape[0] // 2, blocks.shape[1], n - s
    out = np.empty((chunks, p, p, _LANES))
    work = np.empty((n, n, _LANES))
    y = np.empty((p, s, _LANES))
    for c in range(chunks):
        work[:] = 0.0
        block_a, block_b, merged = blocks[c], blocks[c + chunks], out[c]
        for x in range(size):
            for z in range(size):
                ax, az, bx, bz = map_a[x], map_a[z], map_b[x], map_b[z]
                _put(work, ax, az, _add(_get(work, ax, az), _get(block_a, x, z)))
                _put(work, bx, bz, _add(_get(work, bx, bz), _get(block_b, x, z)))
        for k in range(s):
            diagonal = _get(work, k, k)
            for m in range(k):
                diagonal = _minus_product(diagonal, _get(work, m, k), _get(work, m, k))
            scale = _inverse_sqrt(diagonal)
            _put(work, k, k, _mul(diagonal, scale))
            for j in range(k + 1, n):
                entry = _get(work, k, j)
                for m in range(k):
                    entry = _minus_product(entry, _get(work, m, k), _get(work, m, j))
                _put(work, k, j, _mul(entry, scale))
            for j in range(p):
                _put(y, j, k, _get(work, k, s + j))
        for i in range(p):
            for j in range(i, p):
                entry = _get(work, s + i, s + j)
                for k in range(s):
                    entry = _minus_product(entry, _get(y, i, k), _get(y, j, k))
                _put(merged, i, j, entry)
                _put(merged, j, i, entry)
    return out


@numba.njit(cache=True, nogil=True)
def _subtrees(
    padded: np.ndarray,
    gw: float,
    gb: float,
    order: np.ndarray,
    maps_a: np.ndarray,
    maps_b: np.ndarray,
    ns: np.ndarray,
    ss: np.ndarray,
) -> np.ndarray:
    """The Schur complements of all hs x ws blocks of the grid (order.shape), row-major over the grid of
    blocks: (blocks, P, P). Depth first, so the data stay in cache: _LANES blocks at a time, each built
    from its sites (placed by ``order``) and merged level by level (level k: maps_a[k], maps_b[k] onto
    ns[k] nodes, ss[k] of them shared)."""
    hs, ws = order.shape
    per_row = padded.shape[1] // ws
    count = (padded.shape[0] // hs) * per_row
    top = ns[-1] - ss[-1]
    out = np.empty((count, top, top))
    for chunk in range(count // _LANES):
        level = np.zeros((hs * ws, 4, 4, _LANES))
        for lane in range(_LANES):
            block = chunk * _LANES + lane
            i0, j0 = (block // per_row) * hs, (block % per_row) * ws
            for i in range(hs):
                for j in range(ws):
                    site, cell = level[order[i, j]], padded[i0 + i, j0 + j]
                    site[0, 0, lane], site[0, 1, lane], site[1, 0, lane] = gw, -gw, -gw
                    site[1, 1, lane], site[1, 2, lane], site[2, 1, lane] = gw + cell, -cell, -cell
                    site[2, 2, lane], site[2, 3, lane], site[3, 2, lane], site[3, 3, lane] = cell + gb, -gb, -gb, gb
        for k in range(ns.size):
            size = (ns[k] + ss[k]) // 2  # the input blocks' interface P (n = 2 P - s)
            level = _merge_lanes(level, maps_a[k, :size], maps_b[k, :size], ns[k], ss[k])
        for lane in range(_LANES):
            out[chunk * _LANES + lane] = level[0, :, :, lane]
    return out


_compiling = threading.Lock()


def _vectorized(kernel: numba.core.registry.CPUDispatcher, *args: object) -> object:
    """``kernel(*args)``, compiled on its first call with LLVM's SLP vectorizer on.

    numba leaves that pass off unless NUMBA_SLP_VECTORIZE is set before it is imported; it is what turns the
    lane tuples of ``_merge_lanes`` into vector operations (the lane levels of a 256 x 256 array: 40 -> 23 ms
    on AVX2). It reorders no arithmetic, so the results are the same bits with or without it. numba reads the setting
    when it optimises a compiled module, so it is switched on only while this kernel compiles (or loads
    from numba's cache, as compiled then)."""
    if not kernel.signatures:
        with _compiling:
            if not kernel.signatures:
                before = numba.core.config.SLP_VECTORIZE
                numba.core.config.SLP_VECTORIZE = 1
                try:
                    return kernel(*args)
                finally:
                    numba.core.config.SLP_VECTORIZE = before
    return kernel(*args)


def _merge_maps(h: int, w: int, horizontal: bool) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Where two equal h x w blocks' interfaces go in their merge (shared nodes first): (map_a, map_b, n, s).

    Side by side: [shared h | L h | Rt h | T_A w | T_B w | B_A w | B_B w]. One above the other:
    [shared w | L_A h | L_B h | Rt_A h | Rt_B h | T_A w | B_B w]."""
    r, c = np.arange(h), np.arange(w)
    if horizontal:
        map_a = np.concatenate([h + r, r, 3 * h + c, 3 * h + 2 * w + c])
        map_b = np.concatenate([r, 2 * h + r, 3 * h + w + c, 3 * h + 3 * w + c])
        return map_a, map_b, 3 * h + 4 * w, h
    map_a = np.concatenate([w + r, w + 2 * h + r, w + 4 * h + c, c])
    map_b = np.concatenate([w + h + r, w + 3 * h + r, c, 2 * w + 4 * h + c])
    return map_a, map_b, 4 * h + 3 * w, w


@dataclass(frozen=True)
class _Grid:
    """The padded H x W grid and its node numbering: word-line node (i, j), j = -1 for the driver, then
    bit-line node (i, j), i = H for the amplifier."""

    height: int
    width: int

    def word(self, i: np.ndarray | int, j: np.ndarray | int) -> np.ndarray:
        return np.asarray(i * (self.width + 1) + j + 1)

    def bit(self, i: np.ndarray | int, j: np.ndarray | int) -> np.ndarray:
        return np.asarray(self.height * (self.width + 1) + i * self.width + j)

    def interface(self, i0: int, j0: int, h: int, w: int) -> np.ndarray:
        r, c = np.arange(i0, i0 + h), np.arange(j0, j0 + w)
        return np.concatenate([self.word(r, j0 - 1), self.word(r, j0 + w - 1), self.bit(i0, c), self.bit(i0 + h, c)])

    def outside(self, nodes: np.ndarray, i0: int, j0: int, h: int, w: int) -> np.ndarray:
        """Which nodes of a block's interface connect outside it: L and B always, Rt and T unless the block
        is at the open right or top end of the array (those nodes are then eliminated)."""
        return _outside(nodes, self.height, self.width, i0, j0, h, w)


@numba.njit(cache=True, nogil=True)
def _outside(nodes: np.ndarray, height: int, width: int, i0: int, j0: int, h: int, w: int) -> np.ndarray:
    """_Grid.outside, one pass over the nodes."""
    out = np.empty(nodes.size, np.bool_)
    words = height * (width + 1)
    for x in range(nodes.size):
        node = nodes[x]
        if node < words:
            j = node % (width + 1) - 1
            out[x] = j == j0 - 1 or (j == j0 + w - 1 and j0 + w < width)
        else:
            i = (node - words) // width
            out[x] = i == i0 + h or (i == i0 and i0 > 0)
    return out


def _next_merge(h: int, w: int, grid: _Grid) -> bool:
    """True to merge side by side next, False one above the other: keep blocks square while both can grow."""
    return w < grid.width and (w <= h or h == grid.height)


# The lanes merge levels whose merged blocks have at most this many nodes (their work arrays stay in the
# core's cache); the larger merges run through LAPACK / BLAS, one call per block.
_LANES_UP_TO = 112


def _lane_levels(grid: _Grid) -> list[bool]:
    """The merges (True: side by side) that the lanes do, from single sites up: while the merged block is
    small and a level still has whole chunks of _LANES output blocks."""
    merges: list[bool] = []
    h = w = 1
    while (h, w) != (grid.height, grid.width):
        horizontal = _next_merge(h, w, grid)
        n = 3 * h + 4 * w if horizontal else 4 * h + 3 * w
        h, w = (h, 2 * w) if horizontal else (2 * h, w)
        if n > _LANES_UP_TO or grid.height * grid.width // (h * w) < _LANES:
            break
        merges.append(horizontal)
    return merges


def _lane_order(grid: _Grid, merges: list[bool]) -> np.ndarray:
    """(H, W) index of each site's block at the first lane level, such that at every lane merge the two
    halves of output block b are blocks b and b + count (count: the output's blocks), and the last level's
    blocks are in row-major order over the grid of blocks."""
    h, w = 1 << sum(not m for m in merges), 1 << sum(merges)
    index = np.arange((grid.height // h) * (grid.width // w)).reshape(grid.height // h, grid.width // w)
    for horizontal in reversed(merges):
        count, axis = index.size, 1 if horizontal else 0
        index = np.stack([index, index + count], axis=axis + 1).reshape(
            (index.shape[0], 2 * index.shape[1]) if horizontal else (2 * index.shape[0], index.shape[1])
        )
    return index


def _nested_dissection(g: np.ndarray, gw: float, gb: float) -> np.ndarray:
    """M (R x C) by nested dissection: O(N^3) for an N x N array instead of the O(N^4) of eliminating it
    row by row. The array sits in an H x W grid of powers of two, its rows at the bottom (next to the
    amplifiers) and its columns at the left (next to the drivers); the padding cells are open (0 S), so
    their wires end open and carry no current: M is exactly the array's. Which nodes each merge eliminates
    depends only on the array's shape: ``_plan`` works it out once per shape, and this function does the
    arithmetic."""
    rows, cols = g.shape
    plan = _plan(rows, cols)
    grid = plan.grid
    padded = np.zeros((grid.height, grid.width))
    padded[grid.height - rows :, :cols] = g
    sites = (
        _site_laplacians(padded, gw, gb) if plan.lanes is None else _vectorized(_subtrees, padded, gw, gb, *plan.lanes)
    )
    blocks = list(sites)  # the first level's blocks, row-major over the grid of blocks
    for level in plan.levels:
        blocks = [_merge_blocks(blocks[ia], blocks[ib], merge) for ia, ib, merge in level]
    ia, ib, merge = plan.last
    return _final_merge(blocks[ia], blocks[ib] if ib >= 0 else np.zeros((0, 0)), merge, plan.final)


@dataclass(frozen=True)
class _Merge:
    """The index part of one merge of two blocks: each node's role (``_gather``), the s eliminated and the p
    kept nodes."""

    role_a: np.ndarray
    role_b: np.ndarray
    s: int
    p: int


@dataclass(frozen=True)
class _FinalIndex:
    """Where the drivers and amplifiers sit in the last merge: their rows d, c of Y and, for each merged
    block, which drivers and amplifiers it holds (at_d, at_c), their places in it and which of the pairs lie
    in its stored upper triangle."""

    d: np.ndarray
    c: np.ndarray
    blocks: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]


@dataclass(frozen=True)
class _Plan:
    """The elimination order of an array shape: the padded grid, the lane levels' arguments of ``_subtrees``
    (or None), the merges of every later level as (index of a, index of b, _Merge) into the level below, the
    last merge (b's index -1 for a single site) and its ``_FinalIndex``."""

    grid: _Grid
    lanes: tuple | None
    levels: tuple[tuple[tuple[int, int, _Merge], ...], ...]
    last: tuple[int, int, _Merge]
    final: _FinalIndex


@functools.lru_cache(maxsize=16)
def _plan(rows: int, cols: int) -> _Plan:
    """The ``_Plan`` of an R x C array (cached: the tiles of a chip share a few shapes)."""
    grid = _Grid(1 << (rows - 1).bit_length(), 1 << (cols - 1).bit_length())
    merges = _lane_levels(grid)
    h = w = 1
    lanes = None
    if merges:
        maps = []
        for horizontal in merges:
            maps.append(_merge_maps(h, w, horizontal))
            h, w = (h, 2 * w) if horizontal else (2 * h, w)
        size = max(m[0].size for m in maps)
        maps_a, maps_b = (np.stack([np.pad(m[side], (0, size - m[side].size)) for m in maps]) for side in (0, 1))
        ns, ss = np.array([m[2] for m in maps]), np.array([m[3] for m in maps])
        lanes = (_lane_order(_Grid(h, w), merges), maps_a, maps_b, ns, ss)
    per_row = grid.width // w
    nodes = [grid.interface(br * h, bc * w, h, w) for br in range(grid.height // h) for bc in range(per_row)]
    drivers = grid.word(np.arange(grid.height - rows, grid.height), -1)
    amplifiers = grid.bit(grid.height, np.arange(cols))
    everything = (0, 0, grid.height, grid.width)  # in the last merge every driver and amplifier is kept
    if (h, w) == (grid.height, grid.width):  # a single site: only its open ends to eliminate
        merge, kept = _roles(nodes[0], np.zeros(0, np.int64), grid, everything)
        return _Plan(grid, lanes, (), (0, -1, merge), _final_index(kept, (nodes[0],), drivers, amplifiers))
    levels = []
    while True:
        horizontal = _next_merge(h, w, grid)
        nh, nw = (h, 2 * w) if horizontal else (2 * h, w)
        columns = grid.width // w  # blocks per row of the level below
        if (nh, nw) == (grid.height, grid.width):
            ib = 1 if horizontal else columns
            merge, kept = _roles(nodes[0], nodes[ib], grid, everything)
            final = _final_index(kept, (nodes[0], nodes[ib]), drivers, amplifiers)
            return _Plan(grid, lanes, tuple(levels), (0, ib, merge), final)
        level, merged = [], []
        for br in range(grid.height // nh):
            for bc in range(grid.width // nw):
                ia = br * columns + 2 * bc if horizontal else 2 * br * columns + bc
                ib = ia + 1 if horizontal else ia + columns
                merge, kept = _roles(nodes[ia], nodes[ib], grid, (br * nh, bc * nw, nh, nw))
                level.append((ia, ib, merge))
                merged.append(kept)
        levels.append(tuple(level))
        nodes, h, w = merged, nh, nw


def _roles(
    nodes_a: np.ndarray, nodes_b: np.ndarray, grid: _Grid, region: tuple[int, int, int, int]
) -> tuple[_Merge, np.ndarray]:
    """The merge of two blocks (their interface nodes) into ``region`` (i0, j0, h, w): every node that does
    not connect outside it is eliminated, a node of both counting their sum. Returns the _Merge and the kept
    nodes (a's, then b's)."""
    keep_a, keep_b = grid.outside(nodes_a, *region), grid.outside(nodes_b, *region)
    eliminated = np.union1d(nodes_a[~keep_a], nodes_b[~keep_b])
    roles = []
    offset = 0
    for nodes, keep in ((nodes_a, keep_a), (nodes_b, keep_b)):
        role = -1 - np.searchsorted(eliminated, nodes)
        role[keep] = offset + np.arange(np.count_nonzero(keep))
        offset += np.count_nonzero(keep)
        roles.append(role)
    merge = _Merge(roles[0], roles[1], eliminated.size, offset)
    return merge, np.concatenate([nodes_a[keep_a], nodes_b[keep_b]])


def _final_index(
    kept: np.ndarray, blocks: tuple[np.ndarray, ...], drivers: np.ndarray, amplifiers: np.ndarray
) -> _FinalIndex:
    order = np.argsort(kept)
    d, c = order[np.searchsorted(kept, drivers, sorter=order)], order[np.searchsorted(kept, amplifiers, sorter=order)]
    parts = []
    for nodes_block in blocks:
        order = np.argsort(nodes_block)
        at_d = np.isin(drivers, nodes_block)
        at_c = np.isin(amplifiers, nodes_block)
        rows_in = order[np.searchsorted(nodes_block, drivers[at_d], sorter=order)]
        cols_in = order[np.searchsorted(nodes_block, amplifiers[at_c], sorter=order)]
        parts.append((at_d, at_c, rows_in, cols_in, rows_in[:, None] <= cols_in))
    return _FinalIndex(d, c, tuple(parts))


@numba.njit(cache=True, nogil=True)
def _gather(
    schur_a: np.ndarray, role_a: np.ndarray, schur_b: np.ndarray, role_b: np.ndarray, s: int, p: int, with_kept: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The merge's blocks from two symmetric blocks, of which only the upper triangles are read, row by row.

    role of each node of a block: its place k >= 0 among the p kept nodes (a's first, in order), or -1 - x for
    place x among the s eliminated ones (a node of both blocks gets the sum). Returns the eliminated block X
    (s x s), its coupling C (s x p, C order: a gone row's entries are written in a row) to the kept nodes and,
    if with_kept, the upper triangle of
    the kept block K (p x p, zero between a's and b's nodes)."""
    separator = np.zeros((s, s))
    coupling = np.zeros((s, p))
    kept = np.empty((p, p) if with_kept else (1, p))  # a dummy row when K is not wanted
    p_a = np.count_nonzero(role_a >= 0)
    kept[:p_a, p_a:] = 0.0  # the rest of the upper triangle is filled below; the lower one is never read
    for schur, role in ((schur_a, role_a), (schur_b, role_b)):
        for r in range(role.size):
            row, rr = schur[r], role[r]
            if rr < 0:
                x = -1 - rr
                separator[x, x] += row[r]
                for c in range(r + 1, role.size):
                    rc = role[c]
                    if rc < 0:
                        separator[x, -1 - rc] += row[c]
                        separator[-1 - rc, x] += row[c]
                    else:
                        coupling[x, rc] = row[c]
            else:
                into = kept[rr if with_kept else 0]
                for c in range(r, role.size):
                    rc = role[c]
                    if rc < 0:
                        coupling[-1 - rc, rr] = row[c]
                    elif with_kept:
                        into[rc] = row[c]
    return separator, coupling, kept


def _eliminate(schur_a: np.ndarray, schur_b: np.ndarray, merge: _Merge, with_kept: bool):
    """Eliminate a merge's nodes from two blocks' Schur complements (upper triangles). Returns (Y, K): Y = L^-1 C
    (s x p, Fortran order) with X = L L^T the eliminated block and C its coupling to the p kept nodes (a's,
    then b's), K the upper triangle of their block (p x p, if with_kept): what was kept becomes K - Y^T Y."""
    separator, coupling, kept = _gather(schur_a, merge.role_a, schur_b, merge.role_b, merge.s, merge.p, with_kept)
    factor, info = scipy.linalg.lapack.dpotrf(separator, lower=1, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"irdrop: separator block not positive definite (info {info})")
    # Y^T = C^T L^-T: C^T is the Fortran-ordered view of the C-ordered C
    y = scipy.linalg.blas.dtrsm(1.0, factor, coupling.T, side=1, lower=1, trans_a=1, overwrite_b=1)
    return y, kept


def _merge_blocks(schur_a: np.ndarray, schur_b: np.ndarray, merge: _Merge) -> np.ndarray:
    """Two blocks merged: the Schur complement (upper triangle) on the merge's kept nodes, a's then b's."""
    y, kept = _eliminate(schur_a, schur_b, merge, True)
    kept = scipy.linalg.blas.dsyrk(-1.0, y, beta=1.0, c=kept.T, lower=1, overwrite_c=1)
    return kept.T  # the lower triangle of the Fortran-ordered result: the upper one of its transpose


def _final_merge(schur_a: np.ndarray, schur_b: np.ndarray, merge: _Merge, index: _FinalIndex) -> np.ndarray:
    """The last merge, onto the drivers and amplifiers: only their coupling is formed, M = -(K - Y^T Y) on
    (drivers x amplifiers), R x C (the drivers' and the amplifiers' own blocks are never needed)."""
    y, _ = _eliminate(schur_a, schur_b, merge, False)
    m = scipy.linalg.blas.dgemm(1.0, y[index.d], y[index.c], trans_b=1)
    # (a single site's last merge has no block b: one entry in index.blocks)
    for schur, (at_d, at_c, rows_in, cols_in, upper) in zip((schur_a, schur_b), index.blocks, strict=False):
        m[np.ix_(at_d, at_c)] -= np.where(upper, schur[np.ix_(rows_in, cols_in)], schur[np.ix_(cols_in, rows_in)].T)
    return np.asarray(m)


def nodal_system(
    conductances: np.ndarray, r_wl: float, r_bl: float
) -> tuple[scipy.sparse.csc_matrix, scipy.sparse.csr_matrix, scipy.sparse.csr_matrix, scipy.sparse.csr_matrix]:
    """The full nodal equations of the network, for the independent reference solve.

    Returns (Y, B, S, D): node voltages x solve Y x = B V (V: R inputs); outputs are I = S x + D V.
    Unknowns are the word-line nodes (if r_wl > 0) then the bit-line nodes (if r_bl > 0), row-major.
    """
    g = _check_network(conductances, r_wl, r_bl)
    rows, cols = g.shape
    n_cells = rows * cols
    cell = np.arange(n_cells).reshape(rows, cols)
    row_of = np.repeat(np.arange(rows), cols)
    wl = cell if r_wl > 0 else None
    bl = (cell + (n_cells if r_wl > 0 else 0)) if r_bl > 0 else None
    n = (n_cells if r_wl > 0 else 0) + (n_cells if r_bl > 0 else 0)
    entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    sources: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def link(a: np.ndarray, b: np.ndarray, conductance: np.ndarray | float) -> None:
        conductance = np.broadcast_to(conductance, a.shape).ravel()
        a, b = a.ravel(), b.ravel()
        entries.extend([(a, a, conductance), (b, b, conductance), (a, b, -conductance), (b, a, -conductance)])

    def to_fixed(node: np.ndarray, conductance: np.ndarray | float, source_row: np.ndarray | None) -> None:
        """A branch from an unknown node to a fixed voltage: V[source_row] or ground (None)."""
        conductance = np.broadcast_to(conductance, node.shape).ravel()
        entries.append((node.ravel(), node.ravel(), conductance))
        if source_row is not None:
            sources.append((node.ravel(), source_row.ravel(), conductance))

    if wl is not None:
        to_fixed(wl[:, 0], 1.0 / r_wl, np.arange(rows))
        link(wl[:, :-1], wl[:, 1:], 1.0 / r_wl)
    if bl is not None:
        link(bl[:-1], bl[1:], 1.0 / r_bl)
        to_fixed(bl[-1], 1.0 / r_bl, None)
    if wl is not None and bl is not None:
        link(wl, bl, g)
    elif wl is not None:
        to_fixed(wl, g, None)
    elif bl is not None:
        to_fixed(bl, g, row_of.reshape(rows, cols))

    def assemble(parts: list, shape: tuple[int, int]) -> scipy.sparse.csr_matrix:
        if not parts:
            return scipy.sparse.csr_matrix(shape)
        i, j, v = (np.concatenate(p) for p in zip(*parts, strict=True))
        return scipy.sparse.coo_matrix((v, (i, j)), shape=shape).tocsr()

    y = assemble(entries, (n, n)).tocsc()
    b = assemble(sources, (n, rows))
    out_nodes, out_cols, out_g, direct = [], [], [], None
    if bl is not None:
        out_nodes, out_cols, out_g = [bl[-1]], [np.arange(cols)], [np.full(cols, 1.0 / r_bl)]
    elif wl is not None:
        out_nodes, out_cols, out_g = [wl.ravel()], [np.tile(np.arange(cols), rows)], [g.ravel()]
    else:
        direct = scipy.sparse.csr_matrix(g.T)
    s = assemble(list(zip(out_cols, out_nodes, out_g, strict=True)), (cols, n))
    d = direct if direct is not None else scipy.sparse.csr_matrix((cols, rows))
    return y, b, s, d


def solve(conductances: np.ndarray, voltages: np.ndarray, r_wl: float, r_bl: float) -> np.ndarray:
    """Exact output currents (batch, C), amperes, for input voltages (batch, R), by a sparse direct solve of
    the full nodal system (SuperLU). The independent reference for ``effective_conductance``."""
    g = _check_network(conductances, r_wl, r_bl)
    v = np.asarray(voltages, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != g.shape[0] or not np.all(np.isfinite(v)):
        raise ValueError(
            f"irdrop.solve: voltages must be finite, shape (batch, {g.shape[0]}) for {g.shape[0]} rows; "
            f"got shape {v.shape}"
        )
    y, b, s, d = nodal_system(g, r_wl, r_bl)
    out = (d @ v.T).T
    if y.shape[0] > 0:
        x = scipy.sparse.linalg.splu(y).solve(np.asarray(b @ v.T))
        out = out + (s @ x).T
    return np.asarray(out)
