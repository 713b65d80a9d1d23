"""PTD, "perturb-then-diagonalize" (Yu, Nigmetov, Morozov, Mahoney and Erichson, ICLR 2024).

HiPPO-LegS ``A`` is non-normal: its eigenvector matrix has condition number ~1e20 at N = 64, so
diagonalising it is ill-posed. PTD diagonalises ``A + E`` instead, for a small ``E`` chosen to make the
eigenvectors well conditioned (the paper's Sec. 4.2: minimise kappa(V(A + E)) + gamma ||E||). The result is a
backward-stable approximate diagonalisation: ``A + E = V Lambda V^-1`` with ``||E||`` small and
``kappa(V)`` modest, so the diagonal system (Lambda, V^-1 B, C V) stays close to the HiPPO system.

We solve the problem with Adam on the entries of ``E`` (float64, gradients through ``torch.linalg.eig``),
from a seeded random start of relative size ``start``, minimising

    kappa(V) + gamma ||E||_2 / ||A||_2 + mu sum_n relu(Re lambda_n + 1/2)^2

where V has unit-norm columns. The last term is ours, not the paper's: it keeps every eigenvalue left of
Re = -1/2 (HiPPO-LegS's own eigenvalues are -1..-N; an unpenalised optimum moves some into the right half
plane, an unstable SSM). The perturbations of the state sizes the shipped models use are cached in
``models/checkpoints/ptd_legs_<N>.npz``; ``python -m models.ptd --state-size 64`` recomputes one (~10 s).
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crossbar.fileio import write_bytes_atomic
from models.hippo import hippo_legs, modal_form

CACHE = Path(__file__).parent / "checkpoints"


@dataclass(frozen=True)
class PTDSettings:
    """Optimisation settings (dimensionless): penalty weights, start size, Adam steps, seed, and the Adam rate
    ``lr`` on E / ||A||_2 (0.2 / ||A||_2 of N = 64, so the step in E's entries is 0.2 there)."""

    gamma: float = 1.0e4
    mu: float = 10.0
    start: float = 0.01
    steps: int = 600
    lr: float = 7.67e-5
    seed: int = 0


def _objective(a: torch.Tensor, e: torch.Tensor, norm_a: float, s: PTDSettings) -> torch.Tensor:
    eigenvalues, vectors = torch.linalg.eig(a + e)
    vectors = vectors / torch.linalg.vector_norm(vectors, dim=0)
    singular = torch.linalg.svdvals(vectors)
    kappa = singular[0] / singular[-1]
    size = torch.linalg.matrix_norm(e, 2) / norm_a
    return kappa + s.gamma * size + s.mu * torch.relu(eigenvalues.real + 0.5).square().sum()


def optimise_perturbation(n: int, settings: PTDSettings = PTDSettings()) -> np.ndarray:
    """The PTD perturbation ``E`` (n, n) float64 of HiPPO-LegS of state size ``n``."""
    a_np, _ = hippo_legs(n)
    norm_a = float(np.linalg.norm(a_np, 2))
    start = np.random.default_rng(settings.seed).standard_normal((n, n))
    start *= settings.start * norm_a / np.linalg.norm(start, 2)
    a = torch.from_numpy(a_np)
    relative = torch.tensor(start / norm_a, requires_grad=True)
    optimiser = torch.optim.Adam([relative], lr=settings.lr)
    for _ in range(settings.steps):
        optimiser.zero_grad()
        _objective(a, norm_a * relative, norm_a, settings).backward()
        optimiser.step()
    return norm_a * relative.detach().numpy()


def cache_path(n: int) -> Path:
    return CACHE / f"ptd_legs_{n}.npz"


def perturbation(n: int) -> np.ndarray:
    """The cached PTD perturbation of state size ``n`` if shipped, else computed now (seeded)."""
    path = cache_path(n)
    if path.is_file():
        with np.load(path) as data:
            e = data["perturbation"]
        if e.shape != (n, n) or not np.all(np.isfinite(e)):
            raise ValueError(f"{path}: expected a finite ({n}, {n}) perturbation, got shape {e.shape}")
        return e
    return optimise_perturbation(n)


def ptd_modal(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``models.hippo.modal_form`` of HiPPO-LegS + E (eigenvectors with unit-norm columns)."""
    a, _ = hippo_legs(n)
    eigenvalues, vectors = np.linalg.eig(a + perturbation(n))
    return modal_form(eigenvalues, vectors, np.linalg.inv(vectors))


def main() -> None:
    parser = argparse.ArgumentParser(description="Compute and cache the PTD perturbation of HiPPO-LegS.")
    parser.add_argument("--state-size", type=int, nargs="+", default=[64])
    args = parser.parse_args()
    for n in args.state_size:
        e = optimise_perturbation(n)
        a, _ = hippo_legs(n)
        buffer = io.BytesIO()
        np.savez(buffer, perturbation=e)
        write_bytes_atomic(cache_path(n), buffer.getvalue())
        kappa = np.linalg.cond(np.linalg.eig(a + e)[1])
        rel = np.linalg.norm(e, 2) / np.linalg.norm(a, 2)
        print(f"N={n}: kappa(V) {np.linalg.cond(np.linalg.eig(a)[1]):.3g} -> {kappa:.3g}, ||E||/||A|| {rel:.4f}")


if __name__ == "__main__":
    main()
