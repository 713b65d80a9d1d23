"""A nonparametric conductance distribution per read time (part ``spread`` of a device profile) and its sampling.

At each measured time after programming, on a grid of target conductances g_T (siemens), the table holds the
mean offset and the std of g - g_T (curves fitted by ``calibration``: smoothing splines or interpolated
level statistics, no fixed polynomial). The shape of the distribution comes from empirical quantiles of the
standardised deviation z = (g - g_T - mean) / std, kept per measured level and time. A programmed device is

    g = g_T + mean(g_T, t) + std(g_T, t) z,    z = Q(u), u ~ U(0, 1),

with Q the quantile function of the level (piecewise linear between the stored probabilities; the first and
last quantiles are the smallest and largest measured deviations, so tails are never extrapolated).

Interpolation: in g_T linearly between grid points (and quantile tables between their levels); in time
linearly in log t between measured times (linearly in t between 0 and the first positive time). Quantile
tables are blended as quantile functions (the blend of two quantile functions is one) and the blend is
standardised again, so std(g) is exactly the interpolated std. Times outside the table are refused; targets
outside the measured conductance range are refused (``outside = "error"``) or take the statistics of the
nearest measured edge with a warning (``"clamp"``, the default): never silently.

A target of exactly 0 S is a cell left unprogrammed (reset): the idle device of every differential pair and
the tile padding when g_min = 0. It is not an extrapolation but a defined state: the lowest one the data
show, g = max(0, mean(g_lo) + std(g_lo) z) with the offset and spread of the lowest measured conductance
g_lo about 0 S, under either policy and without a warning.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from crossbar.errors import ProfileError

OUTSIDE_POLICIES = ("clamp", "error")
RANGE_TOLERANCE = 1e-9  # relative slack at the ends of the conductance grid (float round-off)


def time_weight(times: np.ndarray, t: float) -> tuple[int, float]:
    """Index k and weight w so that a quantity at time t (s) is (1 - w) q[k] + w q[k + 1]: linear in log t
    between positive times, linear in t from 0 to the first positive time. ``times`` (T,) s increasing."""
    if not times[0] <= t <= times[-1]:
        raise ProfileError(f"t_inference {t:g} s is outside the measured times {times[0]:g} to {times[-1]:g} s")
    if times.size == 1:
        return 0, 0.0
    k = min(int(np.searchsorted(times, t, side="right")) - 1, times.size - 2)
    t_lo, t_hi = times[k], times[k + 1]
    w = (t - t_lo) / (t_hi - t_lo) if t_lo <= 0 else math.log(t / t_lo) / math.log(t_hi / t_lo)
    return k, float(w)


def standardise(table: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Quantile tables (..., Q) at ``probabilities`` (Q,) from 0 to 1, each shifted and scaled so that the
    distribution with that piecewise-linear quantile function has mean 0 and variance 1 (constant: 0)."""
    width = np.diff(probabilities)
    a, b = table[..., :-1], table[..., 1:]
    mean = np.sum(width * (a + b), axis=-1) / 2
    variance = np.maximum(np.sum(width * (a * a + a * b + b * b), axis=-1) / 3 - mean**2, 0.0)
    scale = np.sqrt(variance)
    return (table - mean[..., None]) / np.where(scale > 0, scale, 1.0)[..., None]


@dataclass(frozen=True)
class SpreadTable:
    """``times`` (T,) s; ``conductance`` (G,) S the target grid, increasing; ``mean``, ``std`` (T, G) S the
    mean offset and std of g - g_T; ``quantile_levels`` (L,) S targets of the quantile tables (empty: Gaussian);
    ``probabilities`` (Q,) from 0 to 1; ``quantiles`` (T, L, Q) standardised deviations z; ``outside``:
    ``"clamp"`` or ``"error"`` for targets outside [conductance[0], conductance[-1]]. Siemens at the profile's
    g_max."""

    times: list[float]
    conductance: list[float]
    mean: list[list[float]]
    std: list[list[float]]
    quantile_levels: list[float]
    probabilities: list[float]
    quantiles: list[list[list[float]]]
    outside: str = "clamp"

    TEXT_FIELDS = ("outside",)

    def __post_init__(self) -> None:
        times, grid = np.asarray(self.times, dtype=np.float64), np.asarray(self.conductance, dtype=np.float64)
        if times.ndim != 1 or times.size == 0 or times[0] < 0 or np.any(np.diff(times) <= 0):
            raise ProfileError("spread.times: must be non-negative and strictly increasing")
        if grid.ndim != 1 or grid.size == 0 or np.any(np.diff(grid) <= 0):
            raise ProfileError("spread.conductance: must be a strictly increasing list of siemens")
        for name in ("mean", "std"):
            if np.shape(getattr(self, name)) != (times.size, grid.size):
                raise ProfileError(f"spread.{name}: needs shape (times, conductance) = ({times.size}, {grid.size})")
        if np.any(np.asarray(self.std) < 0):
            raise ProfileError("spread.std: must be non-negative")
        levels, p = np.asarray(self.quantile_levels, dtype=np.float64), np.asarray(self.probabilities)
        if levels.ndim != 1 or np.any(np.diff(levels) <= 0):
            raise ProfileError("spread.quantile_levels: must be a strictly increasing list of siemens")
        if levels.size:
            if p.ndim != 1 or p.size < 2 or p[0] != 0 or p[-1] != 1 or np.any(np.diff(p) <= 0):
                raise ProfileError("spread.probabilities: must increase strictly from 0 to 1")
            if np.shape(self.quantiles) != (times.size, levels.size, p.size):
                raise ProfileError(
                    f"spread.quantiles: needs shape (times, quantile_levels, probabilities) = "
                    f"({times.size}, {levels.size}, {p.size})"
                )
            if np.any(np.diff(np.asarray(self.quantiles), axis=-1) < 0):
                raise ProfileError("spread.quantiles: each quantile table must be non-decreasing")
        if self.outside not in OUTSIDE_POLICIES:
            raise ProfileError(f"spread.outside: must be one of {OUTSIDE_POLICIES} (got {self.outside!r})")

    @functools.cached_property
    def _moments_of_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """``_gram`` of the quantile tables (T L rows), computed once per table."""
        p = np.asarray(self.probabilities)
        return _gram(np.asarray(self.quantiles).reshape(-1, p.size), p)

    def check_range(self, g_target: np.ndarray) -> None:
        """Refuse (``outside="error"``) or warn about (``"clamp"``) targets (S) outside the measured grid;
        targets of exactly 0 S (unprogrammed cells, see the module docstring) are neither."""
        lo, hi = self.conductance[0], self.conductance[-1]
        outside = (g_target != 0) & ((g_target < lo * (1 - RANGE_TOLERANCE)) | (g_target > hi * (1 + RANGE_TOLERANCE)))
        count = int(np.count_nonzero(outside))
        if not count:
            return
        message = (
            f"{count} of {g_target.size} target conductances lie outside the measured range "
            f"{lo:.4g} to {hi:.4g} S of the profile (at its g_max)"
        )
        if self.outside == "error":
            raise ProfileError(f"spread: {message}")
        warnings.warn(
            f"{message}; they take the statistics of the nearest measured conductance (targets of exactly 0 S, "
            "unprogrammed cells, are not counted: they take the lowest's by design)",
            stacklevel=3,
        )

    def moments(self, g_target: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean offset and std (S, shape of ``g_target``) at targets ``g_target`` (S) and time t (s)."""
        k, w = time_weight(np.asarray(self.times), t)
        grid = np.asarray(self.conductance)

        def at(rows: list[list[float]]) -> np.ndarray:
            lo = np.interp(g_target, grid, rows[k])
            return lo if w == 0 else (1 - w) * lo + w * np.interp(g_target, grid, rows[k + 1])

        return at(self.mean), at(self.std)

    def deviates(self, g_target: np.ndarray, t: float, u: np.ndarray) -> np.ndarray:
        """Standardised deviations z (mean 0, variance 1; shape of ``g_target``) of devices at targets
        ``g_target`` (S), time t (s), from uniform draws ``u`` in [0, 1) of the same shape."""
        if not self.quantile_levels:
            return ndtri(np.clip(u, 1e-12, 1 - 1e-12))
        k, w = time_weight(np.asarray(self.times), t)
        levels, p = np.asarray(self.quantile_levels), np.asarray(self.probabilities)
        rows = np.asarray(self.quantiles).reshape(-1, p.size)  # (T L, Q), row k L + j
        position = np.interp(g_target.ravel(), levels, np.arange(levels.size, dtype=np.float64))
        j = np.minimum(position.astype(np.int64), levels.size - 1)
        a = position - j
        j_hi = np.minimum(j + 1, levels.size - 1)
        corners = [(k * levels.size + j, (1 - w) * (1 - a)), (k * levels.size + j_hi, (1 - w) * a)]
        if w > 0:
            corners += [((k + 1) * levels.size + j, w * (1 - a)), ((k + 1) * levels.size + j_hi, w * a)]
        u = u.ravel()
        i = np.clip(np.searchsorted(p, u, side="right") - 1, 0, p.size - 2)
        frac = (u - p[i]) / (p[i + 1] - p[i])
        flat = rows.ravel()
        # the blend sum_c weight_c Q_c of the corner tables' quantile functions at u, standardised by its moments
        z = np.zeros(u.size)
        for row, weight in corners:
            at = row * p.size + i
            z += weight * (flat[at] + frac * (flat[at + 1] - flat[at]))
        gram, means = self._moments_of_tables
        gram = gram.ravel()  # 1-d gathers are several times faster than 2-d fancy indexing
        mean = sum(weight * means[row] for row, weight in corners)
        second = np.zeros(u.size)
        for first, (row_a, weight_a) in enumerate(corners):
            for row_b, weight_b in corners[first:]:
                second += (1 if row_b is row_a else 2) * weight_a * weight_b * gram[row_a * rows.shape[0] + row_b]
        return ((z - mean) / np.sqrt(np.maximum(second - mean**2, 1e-30))).reshape(g_target.shape)


def _gram(rows: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[Q_a(U) Q_b(U)] (R, R) and E[Q_a(U)] (R,) for the piecewise-linear quantile functions ``rows``
    (R, Q) at ``probabilities`` (Q,), U ~ U(0, 1). einsum without BLAS: no thread pool for a small product."""
    h = np.diff(probabilities)
    lo, hi = rows[:, :-1], rows[:, 1:]
    gram = np.einsum("aq,bq,q->ab", 2 * lo + hi, lo, h) + np.einsum("aq,bq,q->ab", lo + 2 * hi, hi, h)
    return gram / 6, (lo + hi) @ h / 2
