"""How small a held-out spread error can be: the scatter of the measured std itself, estimated from the data.

The goodness of fit compares a profile's std with the std s_V measured on the validation half, itself an
estimate from a few hundred (heavy-tailed) reads per level. Even the true std sigma scores |sigma - s_V| / s_V
> 0: that is the noise floor, which no model fitted to other cells can be expected to beat. Three estimates
per level and time (levels with ``MIN_CELLS_PER_LEVEL`` reads in the halves compared):

- ``analytic``: 0.6745 se(s)/s, the large-sample standard error from the level's kurtosis
  (``LevelStats.std_error``; treats s as normal around sigma), what ``crossbar calibrate`` prints;
- ``bootstrap``: the validation reads of each level and time resampled with replacement, ``draws`` times;
  |s_V - s*| / s* is the error of a model equal to s_V (the truth of the resampled world) against a
  re-measured std. The median over levels of each resample gives the distribution of the per-time summary
  the report quotes, the largest over levels that of the worst level. Nonparametric, but conditional on the
  sample: rare large deviations a half happened not to contain are missing, so with kurtosis 10-50 it
  leans low;
- ``split_half``: all cells re-split ``splits`` times (``levels.split_cells``, seeds ``seed`` on) into two
  halves A and B; |s_A - s_B| / s_B is what the raw level statistics of one half score on the other. It
  carries the scatter of both halves, so for small symmetric errors the true model's is 1/sqrt(2) of it
  (``SPLIT_HALF_TO_FLOOR``). Model-free.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from calibration.curve_fits import MIN_CELLS_PER_LEVEL
from calibration.fitting import NORMAL_MEDIAN_ABS
from calibration.levels import LevelStats, assign_levels, split_cells, stats_of_levels
from calibration.schema import Relaxation

SPLIT_HALF_TO_FLOOR = 1 / np.sqrt(2)  # the scatter of one half's std, from that of a difference of two


@dataclass
class NoiseFloor:
    """Per level (``target`` (L,) S) and time (``time`` (T,) s): ``scored`` (L, T) the levels with enough
    validation reads; ``analytic`` (L, T); ``bootstrap`` (draws, L, T); ``split_half`` (splits, L, T): relative
    errors as in the module docstring, NaN where not scored."""

    target: np.ndarray
    time: np.ndarray
    scored: np.ndarray
    analytic: np.ndarray
    bootstrap: np.ndarray
    split_half: np.ndarray

    def summary(self, threshold: float, level_threshold: float) -> dict[str, list[float]]:
        """Per time (lists of T), fractions: the median over levels of each estimate (bootstrap: median and
        5-95 % of the resamples' medians, and the chance that the true model's median is <= ``threshold``;
        split-half: the median over splits, raw and scaled to one half); from the bootstrap, the median of
        the largest error of any level and the chance that it is <= ``level_threshold``."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # times where no level is scored: all NaN
            boot = np.nanmedian(self.bootstrap, axis=1)  # (draws, T)
            split = np.nanmedian(self.split_half, axis=1)  # (splits, T)
            worst = np.nanmax(self.bootstrap, axis=1)
        return {
            "analytic": np.nanmedian(self.analytic, axis=0).tolist(),
            "bootstrap": np.median(boot, axis=0).tolist(),
            "bootstrap_p5": np.percentile(boot, 5, axis=0).tolist(),
            "bootstrap_p95": np.percentile(boot, 95, axis=0).tolist(),
            f"bootstrap_chance_at_most_{threshold:g}": np.mean(boot <= threshold, axis=0).tolist(),
            "bootstrap_largest_level": np.median(worst, axis=0).tolist(),
            f"bootstrap_chance_largest_at_most_{level_threshold:g}": np.mean(worst <= level_threshold, axis=0).tolist(),
            "split_half_raw": np.median(split, axis=0).tolist(),
            "split_half": (SPLIT_HALF_TO_FLOOR * np.median(split, axis=0)).tolist(),
        }

    def per_level(self) -> dict[str, list[list[float]]]:
        """(L, T) lists: the bootstrap's median and 95th percentile of each level's error, and the analytic
        floor; NaN where not scored."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # levels not scored: all NaN
            return {
                "bootstrap": np.nanmedian(self.bootstrap, axis=0).tolist(),
                "bootstrap_p95": np.nanpercentile(self.bootstrap, 95, axis=0).tolist(),
                "analytic": self.analytic.tolist(),
            }


def _bootstrap(
    index: np.ndarray, deviation: np.ndarray, scored: np.ndarray, draws: int, rng: np.random.Generator
) -> np.ndarray:
    """(draws, L, T) |s - s*| / s* for the reads ``deviation`` (N, T) of cells in levels ``index`` (N,)."""
    levels, times = scored.shape
    errors = np.full((draws, levels, times), np.nan)
    for level, k in zip(*np.nonzero(scored), strict=True):
        reads = deviation[index == level, k]
        reads = reads[np.isfinite(reads)]
        measured = np.std(reads, ddof=1)
        again = np.std(reads[rng.integers(0, reads.size, (draws, reads.size))], axis=1, ddof=1)
        errors[:, level, k] = np.abs(measured - again) / again
    return errors


def noise_floor(
    relaxation: Relaxation, split_seed: int, draws: int = 400, splits: int = 20, seed: int = 0
) -> NoiseFloor:
    """The noise floor of the held-out std error on the validation half of ``split_seed`` (as
    ``calibration.fit`` splits the cells): analytic and bootstrap (``draws`` resamples, from ``seed``) on that
    half; split-half over ``splits`` re-splits of all cells (seeds ``seed`` to ``seed + splits - 1``)."""
    r = relaxation
    index, targets = assign_levels(r.target_conductance)

    def stats_of(cells: np.ndarray) -> LevelStats:
        return stats_of_levels(index[cells], targets, r.target_conductance[cells], r.conductance[cells], r.time)

    validation = ~split_cells(index, split_seed)
    held_out = stats_of(validation)
    scored = (held_out.count >= MIN_CELLS_PER_LEVEL) & (held_out.std > 0)
    analytic = np.where(scored, NORMAL_MEDIAN_ABS * held_out.std_error(), np.nan)
    deviation = r.conductance[validation] - r.target_conductance[validation, None]
    bootstrap = _bootstrap(index[validation], deviation, scored, draws, np.random.default_rng(seed))
    split_half = np.full((splits, *scored.shape), np.nan)
    for i in range(splits):
        half = split_cells(index, seed + i)
        a, b = stats_of(half), stats_of(~half)
        both = (np.minimum(a.count, b.count) >= MIN_CELLS_PER_LEVEL) & (a.std > 0) & (b.std > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            split_half[i] = np.where(both, np.abs(a.std - b.std) / b.std, np.nan)
    return NoiseFloor(targets, r.time, scored, analytic, bootstrap, split_half)
