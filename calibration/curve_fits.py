"""Fits of measured level statistics: polynomials in x = g_target / g_max, power-law drift, read noise.

All polynomial coefficients are lowest order first (c0 + c1 x + c2 x^2 ...), as aihwkit's noise models take
them, in siemens at the g_max of the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from calibration.schema import ReadNoise, SchemaError

MIN_CELLS_PER_LEVEL = 20  # levels with fewer reads are too noisy to fit and are left out (and reported)
T0_CANDIDATES = 41  # power-law t0 grid, log-spaced


def polyfit(x: np.ndarray, y: np.ndarray, weights: np.ndarray, order: int) -> list[float]:
    """Weighted least-squares polynomial of y(x), order at most len(x) - 1; coefficients lowest first."""
    order = max(0, min(order, x.size - 1))
    return [float(c) for c in np.polynomial.polynomial.polyfit(x, y, order, w=weights)]


def polyval(coefficients: list[float], x: np.ndarray) -> np.ndarray:
    return np.polynomial.polynomial.polyval(x, np.asarray(coefficients, dtype=np.float64))


@dataclass
class NoisePolynomial:
    """Mean offset and std (siemens) of the conductance around its target, polynomials in x = g_target / g_max."""

    mean: list[float]
    std: list[float]


def fit_level_noise(
    targets: np.ndarray, count: np.ndarray, mean: np.ndarray, std: np.ndarray, g_max: float, order: int
) -> NoisePolynomial:
    """Polynomials through per-level mean offsets and stds (each (L,), S) of levels at ``targets`` (L,) S.

    Weights sqrt(count): the standard error of both a mean and a std scales as 1/sqrt(count).
    """
    use = (count >= MIN_CELLS_PER_LEVEL) & np.isfinite(std)
    if not use.any():
        raise SchemaError(f"no level has {MIN_CELLS_PER_LEVEL} or more reads to fit")
    x, w = targets[use] / g_max, np.sqrt(count[use])
    return NoisePolynomial(mean=polyfit(x, mean[use], w, order), std=polyfit(x, std[use], w, order))


@dataclass
class PowerLaw:
    """Drift g(t) = g(0) ((t + t0) / t0)^-nu with nu ~ |N(nu_mean, nu_std)| per level (as aihwkit's PCM models).

    ``levels`` (L,) S, ``nu_mean``, ``nu_std`` (L,), ``t0`` s, ``cells`` the number of cells fitted per level,
    ``excluded`` cells left out (a non-positive read, log undefined, or no first read).
    """

    t0: float
    levels: list[float]
    nu_mean: list[float]
    nu_std: list[float]
    cells: list[int]
    excluded: int


def _per_cell_nu(log_ratio: np.ndarray, measured: np.ndarray, log_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares nu of every cell, log g(t)/g(t_first) = -nu x(t), and the variance of each estimate due
    to the read-to-read scatter about the line (residual variance / sum x^2; NaN with one point)."""
    x = np.where(measured, log_time[None, :], 0.0)
    sxx = np.sum(x * x, axis=1)
    nu = -np.sum(x * log_ratio, axis=1) / np.where(sxx > 0, sxx, 1.0)
    residual = np.sum(np.where(measured, log_ratio + nu[:, None] * x, 0.0) ** 2, axis=1)
    points = np.sum(measured, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scatter = np.where(points > 1, residual / (points - 1) / sxx, np.nan)
    return nu, scatter


def _best_t0(log_ratio: np.ndarray, measured: np.ndarray, time: np.ndarray, candidates: np.ndarray) -> float:
    """The t0 (s) of ``candidates`` (C,) whose per-cell least-squares fits leave the least residual sum of
    squares over all cells: per cell rss = S_yy - S_xy^2 / S_xx with x = log((t + t0) / (t_first + t0)), all
    candidates at once from two (N, T-1) x (T-1, C) products (BLAS). ``log_ratio``, ``measured`` (N, T-1) as
    ``_per_cell_nu``; ``time`` (T,) s. The first of equal minima is kept."""
    x = np.log((time[1:, None] + candidates[None, :]) / (time[0] + candidates[None, :]))  # (T-1, C)
    sxy = log_ratio @ x  # log_ratio is 0 where not measured
    sxx = measured.astype(np.float64) @ (x * x)
    explained = np.sum(np.divide(sxy * sxy, sxx, out=np.zeros_like(sxx), where=sxx > 0), axis=0)
    return float(candidates[int(np.argmax(explained))])  # least rss = sum S_yy - explained


def fit_power_law(
    level_of_cell: np.ndarray, level_targets: np.ndarray, conductance: np.ndarray, time: np.ndarray
) -> PowerLaw | None:
    """Per-cell drift exponents from conductance (N, T) S at ``time`` (T,) s, summarised per level.

    Reads are relative to each cell's first read (time[0]); t0 is the value on a log grid from time[1] / 10
    to time[-1] that minimises the residuals (``_best_t0``). The spread nu_std is corrected for the scatter of
    the reads about each cell's power law (read noise), which would otherwise widen it. None when fewer than
    two later times or no positive cell.
    """
    if time.size < 3:
        return None
    positive = np.all((conductance > 0) | ~np.isfinite(conductance), axis=1) & np.isfinite(conductance[:, 0])
    if positive.sum() < MIN_CELLS_PER_LEVEL:
        return None
    g = conductance[positive]
    measured = np.isfinite(g[:, 1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        log_ratio = np.where(measured, np.log(g[:, 1:] / g[:, :1]), 0.0)
    candidates = np.logspace(np.log10(max(time[1], 1e-9) / 10), np.log10(time[-1]), T0_CANDIDATES)
    t0 = _best_t0(log_ratio, measured, time, candidates)
    nu, scatter = _per_cell_nu(log_ratio, measured, np.log((time[1:] + t0) / (time[0] + t0)))
    level = level_of_cell[positive]
    nu_mean, nu_std, cells = [], [], []
    for index in range(level_targets.size):
        values, noise = nu[level == index], scatter[level == index]
        nu_mean.append(float(np.mean(values)) if values.size else float("nan"))
        # the spread of the estimates less the part the read-to-read scatter puts into them
        spread = np.var(values, ddof=1) - np.nanmean(noise) if values.size > 1 else float("nan")
        nu_std.append(float(np.sqrt(max(spread, 0.0))))
        cells.append(int(values.size))
    return PowerLaw(t0, [float(v) for v in level_targets], nu_mean, nu_std, cells, int(np.sum(~positive)))


def folded_normal_laplace(a: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """E[exp(-a |X|)] for X ~ N(mu, sd^2), a >= 0 (elementwise, broadcast)."""
    sd = np.maximum(sd, 1e-300)
    exponent = 0.5 * a**2 * sd**2
    upper = -a * mu + exponent + log_ndtr(mu / sd - a * sd)
    lower = a * mu + exponent + log_ndtr(-mu / sd - a * sd)
    return np.exp(upper) + np.exp(lower)


def power_law_moments(
    prog_mean: np.ndarray, prog_std: np.ndarray, nu_mean: np.ndarray, nu_std: np.ndarray, t: np.ndarray, t0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of g(t) = g_prog ((t + t0) / t0)^-nu, g_prog ~ N(prog_mean, prog_std^2) and
    nu ~ |N(nu_mean, nu_std^2)| independent: per level (L, 1) parameters and times t (T,) -> (L, T) each."""
    a = np.log((t[None, :] + t0) / t0)
    first = folded_normal_laplace(a, nu_mean, nu_std)
    second = folded_normal_laplace(2 * a, nu_mean, nu_std)
    mean = prog_mean * first
    variance = (prog_mean**2 + prog_std**2) * second - mean**2
    return mean, np.sqrt(np.maximum(variance, 0.0))


@dataclass
class ReadNoiseFit:
    """Read-to-read std (S) around each cell's mean over ``window`` seconds, a polynomial ``std`` in
    x = g / g_max; ``conductance`` (N,) S the mean of each cell, ``measured`` (N,) S its std."""

    window: float
    std: list[float]
    conductance: np.ndarray
    measured: np.ndarray


def fit_read_noise(data: ReadNoise, g_max: float, order: int, window: float) -> ReadNoiseFit:
    """Std of the reads of each cell about the mean of each ``window``-second stretch, pooled over stretches,
    against the cell's mean conductance: slow relaxation longer than the window is not read noise."""
    samples = max(2, int(round(window * data.sample_rate)))
    stretches = data.conductance.shape[1] // samples
    if stretches < 1:
        raise SchemaError(f"/read_noise: fewer than {samples} reads per cell for a {window:g} s window")
    reads = data.conductance[:, : stretches * samples].reshape(data.cell.size, stretches, samples)
    centred = reads - np.nanmean(reads, axis=2, keepdims=True)
    dof = np.sum(np.isfinite(reads), axis=(1, 2)) - stretches
    measured = np.sqrt(np.nansum(centred**2, axis=(1, 2)) / np.maximum(dof, 1))
    mean = np.nanmean(data.conductance, axis=1)
    coefficients = polyfit(mean / g_max, measured, np.ones_like(mean), order)
    return ReadNoiseFit(window=window, std=coefficients, conductance=mean, measured=measured)
