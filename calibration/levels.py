"""Group cells into programming levels and take the statistics of each level at each read time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_EXACT_LEVELS = 64  # more distinct targets than this are binned (continuous targets)
BINNED_LEVELS = 32


@dataclass
class LevelStats:
    """Per level l and time k: ``target`` (L,) S, ``count`` (L, T) reads, ``mean`` and ``std`` (L, T) of the
    deviation g - g_target in siemens (std with ddof=1; NaN where fewer than two reads), and ``kurtosis``
    (L, T) its fourth central moment / std^4 (3 for Gaussian reads)."""

    target: np.ndarray
    time: np.ndarray
    count: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    kurtosis: np.ndarray

    def std_error(self) -> np.ndarray:
        """(L, T) relative standard error of each std from its reads' own scatter (large-sample formula
        Var(s^2) = (mu4 - sigma^4 (n - 3) / (n - 1)) / n, so se(s) / s = sqrt((kurtosis - (n-3)/(n-1)) / 4n))."""
        n = self.count
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(np.maximum(self.kurtosis - (n - 3) / (n - 1), 0.0) / (4 * n))


def assign_levels(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells' targets (N,) S -> (level of each cell (N,), level targets (L,) S, increasing).

    Up to ``MAX_EXACT_LEVELS`` distinct targets are levels as they are; more are binned into
    ``BINNED_LEVELS`` equal-width bins whose level target is the mean target of their cells.
    """
    values, index = np.unique(targets, return_inverse=True)
    if values.size <= MAX_EXACT_LEVELS:
        return index, values
    edges = np.linspace(values[0], values[-1], BINNED_LEVELS + 1)
    index = np.clip(np.searchsorted(edges, targets, side="right") - 1, 0, BINNED_LEVELS - 1)
    _, index = np.unique(index, return_inverse=True)
    sums = np.bincount(index, weights=targets)
    return index, sums / np.bincount(index)


def level_stats(targets: np.ndarray, conductance: np.ndarray, time: np.ndarray) -> LevelStats:
    """Statistics of conductance (N, T) S (NaN = not read) of cells with targets (N,) S at times (T,) s."""
    index, level_targets = assign_levels(targets)
    return stats_of_levels(index, level_targets, targets, conductance, time)


def split_cells(index: np.ndarray, seed: int) -> np.ndarray:
    """(N,) True for the fit half of the cells, False for the validation half: within every level (``index``
    (N,)) a seeded random half, the larger half (odd counts) fitted."""
    rng = np.random.default_rng(seed)
    fit = np.zeros(index.size, dtype=bool)
    for level in np.unique(index):
        cells = np.flatnonzero(index == level)
        fit[rng.permutation(cells)[: (cells.size + 1) // 2]] = True
    return fit


def stats_of_levels(
    index: np.ndarray, level_targets: np.ndarray, targets: np.ndarray, conductance: np.ndarray, time: np.ndarray
) -> LevelStats:
    """``level_stats`` with the levels given: cell i is in level index[i] (N,) of targets ``level_targets``
    (L,) S; a level without cells has count 0 and NaN statistics."""
    deviation = conductance - targets[:, None]
    finite = np.isfinite(deviation)
    value = np.where(finite, deviation, 0.0)
    levels, times = level_targets.size, time.size
    bins = (index[:, None] * times + np.arange(times)).ravel()  # (level, time) of every read, row-major

    def per_level(values: np.ndarray) -> np.ndarray:
        """Sums of ``values`` (N, T) over the cells of each level, (L, T)."""
        return np.bincount(bins, weights=values.ravel(), minlength=levels * times).reshape(levels, times)

    count, total = per_level(finite.astype(np.float64)), per_level(value)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        centred = np.where(finite, deviation - mean[index], 0.0)
        squares, fourth = per_level(centred**2), per_level(centred**4)
        std = np.sqrt(squares / (count - 1))
        kurtosis = fourth / count / (squares / count) ** 2
    mean[count < 1] = np.nan
    std[count < 2] = np.nan
    kurtosis[count < 2] = np.nan
    return LevelStats(target=level_targets, time=time, count=count, mean=mean, std=std, kurtosis=kurtosis)
