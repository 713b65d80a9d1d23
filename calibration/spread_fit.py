"""The nonparametric spread model: curves of the mean offset and std of g - g_target against the target at
every read time, chosen on held-out cells, and the empirical quantiles of each level (``SpreadTable``).

Candidate forms of a curve through the per-level statistics (x = g_target / g_max):

- ``spline``: a cubic smoothing spline (``scipy.interpolate.UnivariateSpline``, FITPACK) of log std (of the
  mean offset for the mean), each level weighted by the inverse standard error of its value (from the
  level's kurtosis for log std, ``LevelStats.std_error``, at most the Gaussian sqrt(2 (n - 1)); sqrt(n) / std
  for the mean), smoothing ``s = smoothing x levels`` (the weighted squared
  residuals allowed; 1 is what the levels' own sampling scatter gives for Gaussian reads) on a log grid;
- ``linear``: the level statistics joined by straight lines (binned statistics, interpolated);
- ``polynomial``: a polynomial of order ``order`` in x through the std (weights sqrt(count)), the
  ReRamWan2022 form the calibration used before (``curve_fits.fit_level_noise``).

At every time the form and penalty with the lowest median relative std error on the validation half are
kept (for the mean: the lowest median |mean error| / measured std). Levels with fewer than
``MIN_CELLS_PER_LEVEL`` reads in a half are neither fitted nor scored there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import UnivariateSpline

from calibration.curve_fits import MIN_CELLS_PER_LEVEL, polyfit, polyval
from calibration.levels import LevelStats
from calibration.schema import SchemaError
from crossbar.spread_table import SpreadTable, standardise

FORMS = ("spline", "linear", "polynomial")
SMOOTHING = tuple(float(v) for v in np.logspace(-1, 1.5, 11))  # smoothing factors tried (per level)
MIN_SPLINE_LEVELS = 4  # fewer fitted levels than this: linear and polynomial only
GRID_STEPS = 4  # grid points per spacing of neighbouring levels in the stored table
MIN_TAIL_CELLS = 40  # reads a level needs at every time for its own quantile table
PROBABILITIES = (0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 1)

Curve = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Candidate:
    """A form of curve (``FORMS``) with its smoothing factor (spline only)."""

    form: str
    smoothing: float = 0.0

    def label(self) -> str:
        return f"spline s={self.smoothing:.2g}" if self.form == "spline" else self.form


def candidates(levels: int, spread_model: str) -> list[Candidate]:
    """The candidates tried with ``levels`` fitted levels; ``spread_model`` one of ``FORMS`` or "auto"."""
    if spread_model not in (*FORMS, "auto"):
        raise SchemaError(f"spread_model: must be 'auto' or one of {FORMS} (got {spread_model!r})")
    forms = FORMS if spread_model == "auto" else (spread_model,)
    found = []
    for form in forms:
        if form != "spline":
            found.append(Candidate(form))
        elif levels >= MIN_SPLINE_LEVELS:
            found += [Candidate("spline", smoothing) for smoothing in SMOOTHING]
    if not found:
        raise SchemaError(f"spread_model: a spline needs {MIN_SPLINE_LEVELS} or more fitted levels (got {levels})")
    return found


def _curve(
    candidate: Candidate, x: np.ndarray, y: np.ndarray, weight: np.ndarray, count: np.ndarray, log: bool, order: int
) -> Curve:
    """A curve y(x) through per-level values y (L,) at x (L,) increasing: spline weights ``weight`` (L,) (inverse
    standard errors of the values), polynomial weights sqrt(count) (L,) as ``curve_fits.fit_level_noise``;
    splines and lines of log y if ``log``. Splines are held at their end values outside [x[0], x[-1]]."""
    if candidate.form == "polynomial":
        coefficients = polyfit(x, y, np.sqrt(count), order)
        return lambda at: polyval(coefficients, at)
    values = np.log(y) if log else y
    if candidate.form == "linear":
        fitted = lambda at: np.interp(at, x, values)  # noqa: E731
    else:
        spline = UnivariateSpline(x, values, w=weight, k=3, s=candidate.smoothing * x.size, ext="const")
        fitted = spline
    return (lambda at: np.exp(fitted(at))) if log else fitted


def fitted_levels(stats: LevelStats, k: int) -> np.ndarray:
    """(L,) True for the levels of ``stats`` with enough reads at time index k to fit or score."""
    return (stats.count[:, k] >= MIN_CELLS_PER_LEVEL) & (stats.std[:, k] > 0)


def std_curve(candidate: Candidate, stats: LevelStats, k: int, g_max: float, order: int) -> Curve:
    """The std of g - g_target (S) at time index k against x = g_target / g_max, fitted to ``stats``."""
    use = fitted_levels(stats, k)
    count, std = stats.count[use, k], stats.std[use, k]
    weight = 1 / np.maximum(stats.std_error()[use, k], 1 / np.sqrt(2 * (count - 1)))  # heavy tails weigh less
    return _curve(candidate, stats.target[use] / g_max, std, weight, count, True, order)


def mean_curve(candidate: Candidate, stats: LevelStats, k: int, g_max: float, order: int) -> Curve:
    """The mean offset of g - g_target (S) at time index k against x = g_target / g_max."""
    use = fitted_levels(stats, k)
    count, mean, std = stats.count[use, k], stats.mean[use, k], stats.std[use, k]
    return _curve(candidate, stats.target[use] / g_max, mean, np.sqrt(count) / std, count, False, order)


@dataclass
class Selection:
    """Per time: the std and mean candidates kept, and the validation errors of every candidate tried
    (``std_errors[k][label]``: median |relative std error| over the validation levels; ``mean_errors``: median
    |mean error| / measured std)."""

    std: list[Candidate]
    mean: list[Candidate]
    std_errors: list[dict[str, float]] = field(default_factory=list)
    mean_errors: list[dict[str, float]] = field(default_factory=list)


def _scores(curves: list[Curve], x: np.ndarray, measured: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(C,) median over the points x (V,) of |curve(x) - measured| / scale (each (V,)), for C curves; a curve
    that is not finite there scores infinity."""
    with np.errstate(invalid="ignore", over="ignore"):
        predicted = np.stack([curve(x) for curve in curves])
        score = np.median(np.abs(predicted - measured) / scale, axis=1)
    return np.where(np.isnan(score), np.inf, score)


def can_validate(fit: LevelStats, validation: LevelStats) -> bool:
    """Whether every time has two levels to fit in the fit half and one to score in the validation half."""
    return all(fitted_levels(fit, k).sum() >= 2 and fitted_levels(validation, k).any() for k in range(fit.time.size))


def without_validation(stats: LevelStats, spread_model: str) -> Selection:
    """The choice when the cells are too few to hold half out: a spline of smoothing 1 (the levels' own
    scatter) where there are enough levels, else straight lines; ``spread_model`` if not "auto"."""
    chosen = []
    for k in range(stats.time.size):
        levels = int(fitted_levels(stats, k).sum())
        if levels < 2:
            raise SchemaError(
                f"t = {stats.time[k]:g} s: needs two levels with {MIN_CELLS_PER_LEVEL} or more reads (got {levels})"
            )
        if spread_model == "auto":
            chosen.append(Candidate("spline", 1.0) if levels >= MIN_SPLINE_LEVELS else Candidate("linear"))
        else:
            chosen.append(candidates(levels, spread_model)[len(SMOOTHING) // 2 if spread_model == "spline" else 0])
    return Selection(chosen, list(chosen))


def select(fit: LevelStats, validation: LevelStats, g_max: float, order: int, spread_model: str) -> Selection:
    """Choose at every time the std and mean curves with the lowest validation error (see module docstring);
    needs ``can_validate``."""
    selection = Selection([], [])
    for k in range(fit.time.size):
        use_val = fitted_levels(validation, k)
        x = validation.target[use_val] / g_max
        measured_std, measured_mean = validation.std[use_val, k], validation.mean[use_val, k]
        tried = candidates(int(fitted_levels(fit, k).sum()), spread_model)
        std_curves = [std_curve(candidate, fit, k, g_max, order) for candidate in tried]
        mean_curves = [mean_curve(candidate, fit, k, g_max, order) for candidate in tried]
        std_scores = _scores(std_curves, x, measured_std, measured_std)
        mean_scores = _scores(mean_curves, x, measured_mean, measured_std)
        selection.std.append(tried[int(np.argmin(std_scores))])
        selection.mean.append(tried[int(np.argmin(mean_scores))])
        selection.std_errors.append({c.label(): float(e) for c, e in zip(tried, std_scores, strict=True)})
        selection.mean_errors.append({c.label(): float(e) for c, e in zip(tried, mean_scores, strict=True)})
    return selection


def _grid(stats: LevelStats) -> np.ndarray:
    """Targets (S) of the stored table: the levels fitted at every time's common range, GRID_STEPS per gap."""
    fitted = np.stack([fitted_levels(stats, k) for k in range(stats.time.size)], axis=1)
    lo = max(stats.target[fitted[:, k]].min() for k in range(stats.time.size))
    hi = min(stats.target[fitted[:, k]].max() for k in range(stats.time.size))
    levels = stats.target[fitted.any(axis=1) & (stats.target >= lo) & (stats.target <= hi)]
    if levels.size < 2:
        raise SchemaError("relaxation: fewer than two levels are fitted at every time; no conductance range to model")
    steps = np.linspace(0.0, 1.0, GRID_STEPS + 1)[:-1]
    inner = (levels[:-1, None] + steps[None, :] * np.diff(levels)[:, None]).ravel()
    return np.append(inner, levels[-1])


def _quantiles(
    stats: LevelStats, index: np.ndarray, targets: np.ndarray, conductance: np.ndarray, grid: np.ndarray
) -> tuple[list[float], list[list[list[float]]]]:
    """Quantile levels (S) and standardised quantile tables (T, L, Q) of the levels in the grid's range
    with MIN_TAIL_CELLS reads or more at every time."""
    keep = np.all(stats.count >= MIN_TAIL_CELLS, axis=1) & (stats.target >= grid[0]) & (stats.target <= grid[-1])
    p = np.asarray(PROBABILITIES, dtype=np.float64)
    levels = np.flatnonzero(keep)
    cells = np.flatnonzero(keep[index])
    cells = cells[np.argsort(index[cells], kind="stable")]
    row = np.searchsorted(levels, index[cells])  # row of each cell's level in the tables
    rank = np.arange(cells.size) - np.searchsorted(row, row)  # position of each cell within its level
    # (T, L, cells of the largest level): each level's deviations at each time, sorted, NaN (not read) last
    ordered = np.full((stats.time.size, levels.size, int(rank.max(initial=-1)) + 1), np.nan)
    ordered[:, row, rank] = (conductance[cells] - targets[cells, None]).T
    ordered.sort(axis=-1)
    count = stats.count[levels].T.astype(np.int64)[:, :, None]  # (T, L, 1) reads
    position = p * (count - 1)  # np.quantile's linear rule, per level and time
    low = np.floor(position).astype(np.int64)
    at_low = np.take_along_axis(ordered, low, axis=-1)
    at_high = np.take_along_axis(ordered, np.minimum(low + 1, count - 1), axis=-1)
    values = at_low + (position - low) * (at_high - at_low)
    tables = (values - stats.mean[levels].T[:, :, None]) / stats.std[levels].T[:, :, None]
    return stats.target[keep].tolist(), standardise(tables, p).tolist()


def spread_table(
    stats: LevelStats,
    index: np.ndarray,
    targets: np.ndarray,
    conductance: np.ndarray,
    selection: Selection,
    g_max: float,
    order: int,
    outside: str = "clamp",
) -> SpreadTable:
    """The selected curves fitted to ``stats`` (levels of cells ``index`` (N,), targets (N,) S, reads
    (N, T) S) and tabulated, with the empirical quantiles of those cells."""
    grid = _grid(stats)
    x = grid / g_max
    mean, std = [], []
    for k in range(stats.time.size):
        mean.append(mean_curve(selection.mean[k], stats, k, g_max, order)(x).tolist())
        std.append(np.maximum(std_curve(selection.std[k], stats, k, g_max, order)(x), 0.0).tolist())
    levels, tables = _quantiles(stats, index, targets, conductance, grid)
    return SpreadTable(
        times=stats.time.tolist(),
        conductance=grid.tolist(),
        mean=mean,
        std=std,
        quantile_levels=levels,
        probabilities=list(PROBABILITIES) if levels else [],
        quantiles=tables,
        outside=outside,
    )
