"""The vectorised statistics of a fit against plain numpy/scipy computed level by level: per-level moments,
the power law's t0 search, the empirical quantile tables of the spread model."""

import numpy as np
import pytest
from scipy.stats import kurtosis

from calibration.curve_fits import T0_CANDIDATES, fit_power_law
from calibration.levels import stats_of_levels
from calibration.spread_fit import PROBABILITIES, _quantiles
from crossbar.spread_table import standardise


def _cells(seed: int, levels: int = 5, cells: int = 60, times: int = 4):
    """Level of each cell, level targets (S), cell targets (S) and reads (N, T) S with some NaN."""
    rng = np.random.default_rng(seed)
    level_targets = np.linspace(2e-6, 20e-6, levels)
    index = rng.permutation(np.repeat(np.arange(levels), cells))
    reads = level_targets[index, None] * (1 + 0.05 * rng.laplace(size=(index.size, times)))
    reads[rng.random(reads.shape) < 0.1] = np.nan
    return index, level_targets, level_targets[index], reads


def test_level_statistics_match_numpy_level_by_level():
    index, level_targets, targets, reads = _cells(0)
    stats = stats_of_levels(index, level_targets, targets, reads, np.arange(4.0))
    for level in range(level_targets.size):
        for k in range(4):
            deviation = reads[index == level, k] - level_targets[level]
            deviation = deviation[np.isfinite(deviation)]
            assert stats.count[level, k] == deviation.size
            assert stats.mean[level, k] == pytest.approx(np.mean(deviation), rel=1e-12)
            assert stats.std[level, k] == pytest.approx(np.std(deviation, ddof=1), rel=1e-12)
            assert stats.kurtosis[level, k] == pytest.approx(kurtosis(deviation, fisher=False), rel=1e-10)


def test_power_law_t0_is_the_least_squares_choice_of_a_candidate_loop():
    """t0 from all candidates at once equals the candidate whose per-cell fits, done one candidate at a time
    with the residuals summed directly, leave the least residual; and it recovers the generating t0."""
    rng = np.random.default_rng(1)
    time, t0_true = np.array([0.0, 1.0, 10.0, 100.0, 1e3, 1e4]), 30.0
    nu = rng.normal(0.05, 0.01, 400)
    g = 10e-6 * ((time + t0_true) / t0_true) ** -nu[:, None] * np.exp(0.002 * rng.standard_normal((400, time.size)))
    g[rng.random(g.shape) < 0.05] = np.nan
    g[:, 0] = 10e-6
    law = fit_power_law(np.zeros(400, dtype=int), np.array([10e-6]), g, time)
    y, measured = np.log(g[:, 1:] / g[:, :1]), np.isfinite(g[:, 1:])
    rss = []
    candidates = np.logspace(np.log10(time[1] / 10), np.log10(time[-1]), T0_CANDIDATES)
    for t0 in candidates:
        x = np.log((time[1:] + t0) / (time[0] + t0))
        total = 0.0
        for cell in range(400):
            xc, yc = x[measured[cell]], y[cell, measured[cell]]
            slope = np.dot(xc, yc) / np.dot(xc, xc)
            total += np.sum((yc - slope * xc) ** 2)
        rss.append(total)
    assert law.t0 == candidates[int(np.argmin(rss))]
    assert law.t0 == pytest.approx(t0_true, rel=0.3)  # the grid steps by 26 %


def test_quantile_tables_match_numpy_quantiles():
    index, level_targets, targets, reads = _cells(2, levels=4, cells=80)
    stats = stats_of_levels(index, level_targets, targets, reads, np.arange(4.0))
    grid = np.array([level_targets[1], level_targets[-1]])  # level 0 lies outside: not tabulated
    levels, tables = _quantiles(stats, index, targets, reads, grid)
    assert levels == level_targets[1:].tolist()
    for row, level in enumerate(range(1, 4)):
        for k in range(4):
            deviation = reads[index == level, k] - level_targets[level]
            z = (deviation[np.isfinite(deviation)] - stats.mean[level, k]) / stats.std[level, k]
            expected = standardise(np.quantile(z, PROBABILITIES), np.asarray(PROBABILITIES))
            assert np.asarray(tables)[k, row] == pytest.approx(expected, rel=1e-12, abs=1e-12)
