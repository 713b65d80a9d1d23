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

How M is computed. Eliminating each word line (a tridiagonal system given its bit-line voltages) leaves one
dense C x C block per row i acting on the bit-line voltages v_i, and neighbouring rows are coupled only
through the bit-line wires (-1/r_bl times the identity): a block-tridiagonal system. Its forward elimination,
from the top row down to the row next to the amplifiers, carries all R unit inputs at once; the last row's
voltages give M. Cost about R C^3 + R^2 C^2 / 2 flops in LAPACK / BLAS, float64.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg


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


@numba.njit(cache=True)
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
    # General case: block elimination over rows. With word line i eliminated,
    #   u_i = A_i^-1 (e0 V_i / r_wl + diag(G_i) v_i),
    # bit-line row i sees K_i = diag(G_i) - diag(G_i) A_i^-1 diag(G_i) and the source b_i V_i,
    # b_i = diag(G_i) A_i^-1 e0 / r_wl. The bit-line system is block tridiagonal with blocks K_i + n_i gb I on
    # the diagonal (n_i wires at row i) and -gb I beside it. Forward elimination in units of gb,
    #   T_i = n_i I + K_i / gb - Z_{i-1},  Z_i = T_i^-1,  y_i = b_i e_i^T + Z_{i-1} y_{i-1},
    # carries the R unit inputs as the R columns of y (column k is zero above row k), and the amplifier
    # currents are gb v_{R-1} = Z_{R-1} y_{R-1}. Working with T (near I) rather than gb T avoids cancelling
    # the large wire conductances against each other. Only lower triangles of the symmetric T and Z are kept.
    gw = 1.0 / r_wl
    rhs = np.zeros((cols, rows), order="F")  # column slices stay contiguous for BLAS
    z_lower = np.zeros((cols, cols), order="F")
    spare = np.empty((cols, cols), order="F")  # two buffers: LAPACK inverts T_i in place into Z_i
    for i in range(rows):
        a_inv = _word_line_inverse(g[i], gw)
        _bit_line_block(g[i], a_inv, r_bl, 2.0 if i > 0 else 1.0, z_lower, spare)
        if i > 0:
            rhs[:, :i] = scipy.linalg.blas.dsymm(1.0, z_lower, rhs[:, :i], side=0, lower=1)
        rhs[:, i] = g[i] * a_inv[:, 0] * gw
        z_lower, spare = _spd_inverse_lower(spare), z_lower
    return scipy.linalg.blas.dsymm(1.0, z_lower, rhs, side=0, lower=1).T


@numba.njit(cache=True)
def _bit_line_block(
    g_row: np.ndarray, a_inv: np.ndarray, r_bl: float, wires: float, z_lower: np.ndarray, out: np.ndarray
) -> None:
    """Lower triangle of T_i = wires I + (diag(g) - diag(g) A^-1 diag(g)) r_bl - Z_{i-1} into ``out``
    (column-major, as LAPACK reads it); z_lower is Z_{i-1}'s lower triangle (zeros for the first row)."""
    cols = g_row.shape[0]
    for k in range(cols):
        gk = g_row[k] * r_bl
        for j in range(k, cols):
            out[j, k] = -gk * a_inv[j, k] * g_row[j] - z_lower[j, k]
        out[k, k] += gk + wires


def _spd_inverse_lower(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive-definite matrix, from its lower triangle; only the lower triangle of
    the result is valid (Cholesky, LAPACK dpotrf + dpotri). A column-major input is overwritten and returned."""
    factor, info = scipy.linalg.lapack.dpotrf(matrix, lower=1, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"irdrop: block not positive definite (info {info})")
    inverse, info = scipy.linalg.lapack.dpotri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"irdrop: block inversion failed (info {info})")
    return inverse


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
