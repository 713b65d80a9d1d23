"""HiPPO-LegS: the state matrix S4 starts from, its normal-plus-low-rank form, and diagonal initialisations.

The continuous-time system is x'(t) = A x(t) + B u(t), state size N. HiPPO-LegS (Gu et al., "HiPPO:
Recurrent Memory with Optimal Polynomial Projections", NeurIPS 2020, eq. (29), sign convention of S4):

    A[n, k] = -sqrt(2n+1) sqrt(2k+1)   n > k
    A[n, n] = -(n + 1)
    A[n, k] = 0                        n < k
    B[n]    = sqrt(2n+1)

It is lower triangular with eigenvalues -1, ..., -N but exponentially ill-conditioned eigenvectors, so it
cannot be diagonalised stably. Its normal-plus-low-rank (NPLR) form (S4, Gu et al. ICLR 2022, Sec. 3.1) is
A = S - P P^T with P[n] = sqrt(n + 1/2) and S = -I/2 + (skew-symmetric): S is normal and diagonalises with a
unitary matrix. S4D-LegS and DSS take S's eigenvalues; S4-PTD and S5-PTD diagonalise a perturbed A instead
(``models.ptd``).

Diagonal initialisations return ``(Lambda, B)``: N/2 complex eigenvalues with positive imaginary part (their
conjugates are implied: the models output 2 Re(...)) and the input vector in the eigenbasis.
"""

from __future__ import annotations

import numpy as np

DIAGONAL_INITS = ("legs", "lin", "inv")


def _check_size(n: int) -> None:
    if not isinstance(n, int | np.integer) or n < 2 or n % 2:
        raise ValueError(f"state size must be an even integer >= 2 (got {n!r})")


def hippo_legs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO-LegS ``A`` (n, n) and ``B`` (n,), float64."""
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"state size must be a positive integer (got {n!r})")
    r = np.sqrt(2.0 * np.arange(n) + 1.0)
    a = -np.tril(np.outer(r, r), -1) - np.diag(np.arange(n) + 1.0)
    return a, r.copy()


def hippo_legs_nplr(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The normal-plus-low-rank form: ``S`` (n, n) normal, ``P`` (n,), ``B`` (n,) with A = S - P P^T."""
    a, b = hippo_legs(n)
    p = np.sqrt(np.arange(n) + 0.5)
    return a + np.outer(p, p), p, b


def modal_form(
    eigenvalues: np.ndarray, vectors: np.ndarray, inverse: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real diagonalisable system x' = V diag(eigenvalues) V^-1 x as modes for a 2 Re(...) output.

    Keeps one eigenvalue of each complex-conjugate pair (positive imaginary part) and every real eigenvalue.
    Returns ``(lam (M,), into (M, N), out (N, M))``: the modal state is ``z = into @ x`` and the output
    ``C x = 2 Re(C @ out @ z)``; a real mode has its ``out`` column halved so that 2 Re(...) counts it once.
    Modes are sorted by imaginary part. M = N/2 + (number of real eigenvalues)/2.
    """
    scale = np.maximum(np.abs(eigenvalues), 1.0)
    real = np.abs(eigenvalues.imag) <= 1e-9 * scale
    upper = ~real & (eigenvalues.imag > 0)
    if 2 * upper.sum() + real.sum() != len(eigenvalues):
        raise ValueError("eigenvalues of a real matrix must come in complex-conjugate pairs")
    keep = np.flatnonzero(upper | real)
    keep = keep[np.argsort(eigenvalues[keep].imag, kind="stable")]
    lam = eigenvalues[keep].copy()
    lam[real[keep]] = lam[real[keep]].real
    out = vectors[:, keep] * np.where(real[keep], 0.5, 1.0)
    return lam, inverse[keep], out


def legs_modal(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``modal_form`` of the normal part S of HiPPO-LegS (unitary eigenvectors; n/2 complex modes)."""
    _check_size(n)
    s, _, _ = hippo_legs_nplr(n)
    # S = -I/2 + K with K skew-symmetric: diagonalise the Hermitian iK (stable, unitary eigenvectors).
    w, v = np.linalg.eigh(1j * (s + 0.5 * np.eye(n)))
    return modal_form(-0.5 - 1j * w, v, v.conj().T)


def diagonal_init(kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(Lambda, B)`` of a diagonal SSM with state size ``n``: n/2 complex modes (complex128 each).

    ``legs``: S4D-LegS / DSS, eigenvalues of the normal part S of HiPPO-LegS and B in S's eigenbasis
    (V^H B; Gu et al., "On the Parameterization and Initialization of Diagonal State Space Models", 2022).
    ``lin``: S4D-Lin, Lambda_n = -1/2 + i pi n, B = 1. ``inv``: S4D-Inv, Lambda_n = -1/2 + i (N/pi)
    (N/(2n+1) - 1), B = 1 (same paper, Sec. 4.2).
    """
    _check_size(n)
    half = np.arange(n // 2)
    if kind == "legs":
        lam, into, _ = legs_modal(n)
        return lam, into @ hippo_legs(n)[1]
    if kind == "lin":
        return -0.5 + 1j * np.pi * half, np.ones(n // 2, dtype=complex)
    if kind == "inv":
        return -0.5 + 1j * (n / np.pi) * (n / (2 * half + 1) - 1), np.ones(n // 2, dtype=complex)
    raise ValueError(f"diagonal init must be one of {', '.join(DIAGONAL_INITS)} (got {kind!r})")


def eigenvector_condition(a: np.ndarray) -> float:
    """kappa(V) = ||V||_2 ||V^-1||_2 of the eigenvectors of ``a`` (unit-norm columns, as numpy returns them)."""
    _, v = np.linalg.eig(a)
    return float(np.linalg.cond(v))
