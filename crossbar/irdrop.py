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
soon as a block reaches them. Cost O(N^3) for an N x N array, in float64: numba for the many small blocks
of the lower levels, LAPACK / BLAS (one thread) for the few large ones above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
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


@numba.njit(cache=True, nogil=True)
def _scatter(work: np.ndarray, block: np.ndarray, position: np.ndarray) -> None:
    """work[position[x], position[y]] += block[x, y], reading only the lower triangle x >= y of a symmetric
    block (the BLAS stage keeps lower triangles alone)."""
    for x in range(position.shape[0]):
        px = position[x]
        for y in range(x):
            value, py = block[x, y], position[y]
            work[px, py] += value
            work[py, px] += value
        work[px, px] += block[x, x]


@numba.njit(cache=True, nogil=True)
def _assemble(size: int, block_a: np.ndarray, position_a: np.ndarray, block_b: np.ndarray, position_b: np.ndarray):
    work = np.zeros((size, size))
    _scatter(work, block_a, position_a)
    _scatter(work, block_b, position_b)
    return work


@numba.njit(cache=True, nogil=True)
def _schur_small(work: np.ndarray, s: int, y: np.ndarray, out: np.ndarray) -> None:
    """out = K - C^T X^-1 C for the symmetric work = [[X, C], [C^T, K]], X s x s: Cholesky X = U^T U (rows
    of U written over X's rows), Y = U^-T C (s x p, into y), then K - Y^T Y by rank-4 updates."""
    n = work.shape[0]
    p = n - s
    for k in range(s):
        row = work[k]
        for m in range(k):
            factor, above = work[m, k], work[m]
            for j in range(k, n):
                row[j] -= factor * above[j]
        inverse = 1.0 / np.sqrt(row[k])
        for j in range(k, n):
            row[j] *= inverse
        for j in range(p):
            y[k, j] = row[s + j]
    for i in range(p):
        for j in range(i, p):
            out[i, j] = work[s + i, s + j]
    k = 0
    while k < s:
        if k + 4 <= s:
            y0, y1, y2, y3 = y[k], y[k + 1], y[k + 2], y[k + 3]
            for i in range(p):
                a0, a1, a2, a3, row = y0[i], y1[i], y2[i], y3[i], out[i]
                for j in range(i, p):
                    row[j] -= a0 * y0[j] + a1 * y1[j] + a2 * y2[j] + a3 * y3[j]
            k += 4
        else:
            y0 = y[k]
            for i in range(p):
                a0, row = y0[i], out[i]
                for j in range(i, p):
                    row[j] -= a0 * y0[j]
            k += 1
    for i in range(p):
        for j in range(i):
            out[i, j] = out[j, i]


@numba.njit(cache=True, nogil=True)
def _merge_level(
    blocks: np.ndarray, first: np.ndarray, second: np.ndarray, map_a: np.ndarray, map_b: np.ndarray, n: int, s: int
) -> np.ndarray:
    """Merge blocks[first[b]] with blocks[second[b]] for every b: place them on n nodes (map_a, map_b), the
    shared s first, and eliminate those. Returns (len(first), n - s, n - s)."""
    out = np.empty((first.shape[0], n - s, n - s))
    work = np.empty((n, n))
    y = np.empty((s, n - s))
    for b in range(first.shape[0]):
        work[:] = 0.0
        _scatter(work, blocks[first[b]], map_a)
        _scatter(work, blocks[second[b]], map_b)
        _schur_small(work, s, y, out[b])
    return out


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
        words = nodes < self.height * (self.width + 1)
        j = nodes % (self.width + 1) - 1
        i = (nodes - self.height * (self.width + 1)) // self.width
        word_out = (j == j0 - 1) | ((j == j0 + w - 1) & (j0 + w < self.width))
        bit_out = (i == i0 + h) | ((i == i0) & (i0 > 0))
        return np.where(words, word_out, bit_out)


def _next_merge(h: int, w: int, grid: _Grid) -> bool:
    """True to merge side by side next, False one above the other: keep blocks square while both can grow."""
    return w < grid.width and (w <= h or h == grid.height)


# Merges that eliminate at least this many shared nodes run through LAPACK / BLAS, one call per block; below
# it, numba merges a whole level of small blocks in one call.
_BLAS_FROM = 64


def _nested_dissection(g: np.ndarray, gw: float, gb: float) -> np.ndarray:
    """M (R x C) by nested dissection: O(N^3) for an N x N array instead of the O(N^4) of eliminating it
    row by row. The array sits in an H x W grid of powers of two, its rows at the bottom (next to the
    amplifiers) and its columns at the left (next to the drivers); the padding cells are open (0 S), so
    their wires end open and carry no current: M is exactly the array's."""
    rows, cols = g.shape
    grid = _Grid(1 << (rows - 1).bit_length(), 1 << (cols - 1).bit_length())
    padded = np.zeros((grid.height, grid.width))
    padded[grid.height - rows :, :cols] = g
    blocks = _site_laplacians(padded, gw, gb)
    h = w = 1
    while (h, w) != (grid.height, grid.width):  # numba: whole levels of small blocks
        horizontal = _next_merge(h, w, grid)
        if (h if horizontal else w) >= _BLAS_FROM:
            break
        index = np.arange(blocks.shape[0]).reshape(grid.height // h, grid.width // w)
        pairs = (index[:, 0::2], index[:, 1::2]) if horizontal else (index[0::2], index[1::2])
        map_a, map_b, n, s = _merge_maps(h, w, horizontal)
        blocks = _merge_level(blocks, pairs[0].ravel(), pairs[1].ravel(), map_a, map_b, n, s)
        w, h = (2 * w, h) if horizontal else (w, 2 * h)
    per_row = grid.width // w
    level = {
        (br, bc): (blocks[br * per_row + bc], grid.interface(br * h, bc * w, h, w))
        for br in range(grid.height // h)
        for bc in range(per_row)
    }
    while (h, w) != (grid.height, grid.width):  # LAPACK / BLAS: one merge at a time, open ends eliminated
        horizontal = _next_merge(h, w, grid)
        nh, nw = (h, 2 * w) if horizontal else (2 * h, w)
        level = {
            (br, bc): _merge_blocks(
                level[(br, 2 * bc) if horizontal else (2 * br, bc)],
                level[(br, 2 * bc + 1) if horizontal else (2 * br + 1, bc)],
                grid,
                (br * nh, bc * nw, nh, nw),
            )
            for br in range(grid.height // nh)
            for bc in range(grid.width // nw)
        }
        h, w = nh, nw
    schur, nodes = level[0, 0]
    if nodes.size > grid.height + grid.width:  # the open ends are still there when no BLAS merge ran
        schur, nodes = _merge_blocks((schur, nodes), (np.zeros((0, 0)), nodes[:0]), grid, (0, 0, h, w))
    drivers = np.searchsorted(nodes, grid.word(np.arange(grid.height - rows, grid.height), -1))
    amplifiers = np.searchsorted(nodes, grid.bit(grid.height, np.arange(cols)))
    return -schur[np.ix_(amplifiers, drivers)].T  # lower triangle: amplifier nodes come after driver nodes


def _merge_blocks(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], grid: _Grid, region: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two blocks (Schur complement, sorted interface nodes) into the block of ``region`` (i0, j0, h,
    w): every node that does not connect outside it is eliminated. Returns its lower triangle and nodes."""
    (schur_a, nodes_a), (schur_b, nodes_b) = a, b
    nodes = np.union1d(nodes_a, nodes_b)
    outside = grid.outside(nodes, *region)
    order = np.concatenate([nodes[~outside], nodes[outside]])
    rank = np.argsort(order)
    position_a = rank[np.searchsorted(order, nodes_a, sorter=rank)]
    position_b = rank[np.searchsorted(order, nodes_b, sorter=rank)]
    s = int(np.count_nonzero(~outside))
    return _schur_lower(_assemble(order.size, schur_a, position_a, schur_b, position_b), s), order[s:]


def _schur_lower(work: np.ndarray, s: int) -> np.ndarray:
    """Lower triangle of K - C^T X^-1 C for the symmetric work = [[X, C], [C^T, K]], X s x s (LAPACK dpotrf,
    dtrtrs, BLAS dsyrk)."""
    if s == 0:
        return work
    columns = work.T  # the same symmetric matrix, column-major as LAPACK reads it
    factor, info = scipy.linalg.lapack.dpotrf(columns[:s, :s], lower=1, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"irdrop: separator block not positive definite (info {info})")
    y, info = scipy.linalg.lapack.dtrtrs(factor, columns[:s, s:], lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"irdrop: triangular solve failed (info {info})")
    return scipy.linalg.blas.dsyrk(-1.0, y, beta=1.0, c=columns[s:, s:], trans=1, lower=1, overwrite_c=1)


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
