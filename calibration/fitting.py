"""``calibration.fit``: a measurement file -> a device profile, with its goodness of fit on held-out cells.

With a relaxation group (two or more times) the cells of every level are split, seeded, into a fit half and
a validation half (``levels.split_cells``). The spread model's form and smoothing are chosen per time on the
validation half (``spread_fit.select``). The drift over time is then fitted two ways: a power law per level
(exponent nu mean and spread, aihwkit's PCM form) and the nonparametric spread table (``spread_fit``: mean
and std curves per time, empirical quantiles per level). The power law is kept when it holds, that is when
the std it predicts (closed form, ``curve_fits.power_law_moments``) is within ``POWER_LAW_TOLERANCE`` of the
measured std at every fitted level and time (it then also extrapolates in time); otherwise the table is kept
(RRAM relaxes, it does not drift like PCM). The profile returned is fitted to all cells with the choices
made; the same fit on the fit half alone (``FitResult.validation_profile``) is what the goodness of fit
(``goodness``) scores against the validation half: a spread table's exact moments, other forms' own samples
(``PREDICTION_DRAWS`` per level and time, fixed seeds).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibration.curve_fits import (
    MIN_CELLS_PER_LEVEL,
    NoisePolynomial,
    PowerLaw,
    ReadNoiseFit,
    fit_level_noise,
    fit_power_law,
    fit_read_noise,
    polyval,
    power_law_moments,
)
from calibration.levels import LevelStats, assign_levels, level_stats, split_cells, stats_of_levels
from calibration.reader import read
from calibration.schema import SCHEMA_VERSION, Measurements, Relaxation
from calibration.spread_fit import Selection, can_validate, select, spread_table, without_validation
from crossbar.engine import one_blas_thread
from crossbar.profile import DeviceProfile, Polynomials, PowerLawDrift, ReadNoisePolynomial

POWER_LAW_TOLERANCE = 0.15  # largest relative std error of a power law that is still said to hold
PREDICTION_DRAWS = 4000  # samples per level and time (forms other than a spread table): std scatter 1.1 %
PREDICTION_SEED = 12345
SPLIT_SEED = 0
NORMAL_MEDIAN_ABS = 0.6745  # median of |N(0, 1)|


@dataclass
class Goodness:
    """Measured statistics per level (rows) and time (columns) against the profile's samples, siemens."""

    measured: LevelStats
    fitted_mean: np.ndarray
    fitted_std: np.ndarray

    @property
    def fitted_levels(self) -> np.ndarray:
        """(L, T) True where a level has enough reads to be fitted."""
        return self.measured.count >= MIN_CELLS_PER_LEVEL

    def std_error(self) -> np.ndarray:
        """Relative error of the fitted std, (fitted - measured) / measured, (L, T); NaN on unfitted levels."""
        with np.errstate(invalid="ignore", divide="ignore"):
            error = (self.fitted_std - self.measured.std) / self.measured.std
        return np.where(self.fitted_levels, error, np.nan)

    def noise_floor(self) -> np.ndarray:
        """(L, T) the median |relative std error| a perfect model would show from the scatter of the measured
        std alone (0.6745 standard errors, ``LevelStats.std_error``); NaN on unfitted levels."""
        return np.where(self.fitted_levels, NORMAL_MEDIAN_ABS * self.measured.std_error(), np.nan)


@dataclass
class FitResult:
    """A fitted profile with what it was fitted to: level statistics (None for read noise alone), the drift
    model kept (``power_law``, ``spread_table`` or ``none``), the power law's largest relative std error, the
    read-noise fit, rows the reader skipped, notes, and (from ``fit_with_report``) the goodness of fit.
    With relaxation data: the statistics of the validation half, the profile fitted to the fit half alone,
    and the spread model's selection (forms and their validation errors per time)."""

    profile: DeviceProfile
    stats: LevelStats | None
    drift_model: str
    skipped: dict[str, int]
    power_law_error: float | None = None
    read_noise: ReadNoiseFit | None = None
    notes: list[str] = field(default_factory=list)
    goodness: Goodness | None = None
    validation: LevelStats | None = None
    validation_profile: DeviceProfile | None = None
    selection: Selection | None = None


def goodness(profile: DeviceProfile, stats: LevelStats) -> Goodness:
    """Mean offset and std of the profile at the measured level targets and times: a spread table's exact
    moments (``SpreadTable.moments``; its sampling reproduces them, tests/test_calibration_spread.py), else
    the mean and std of the profile's own samples. Levels outside the profile's conductance range take its
    clamped statistics, what a simulation would use."""
    if profile.spread is not None:
        moments = [profile.spread.moments(stats.target, float(t)) for t in stats.time]
        return Goodness(stats, np.stack([m for m, _ in moments], axis=1), np.stack([s for _, s in moments], axis=1))
    draws = np.repeat(stats.target[:, None], PREDICTION_DRAWS, axis=1)
    mean = np.empty(stats.count.shape)
    std = np.empty_like(mean)
    for k, t in enumerate(stats.time):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*outside the measured range", category=UserWarning)
            g = profile.program(draws, float(t), seed=PREDICTION_SEED + k)
        mean[:, k] = np.mean(g, axis=1) - stats.target
        std[:, k] = np.std(g, axis=1, ddof=1)
    return Goodness(stats, mean, std)


def _power_law_drift(law: PowerLaw) -> PowerLawDrift | None:
    use = (np.asarray(law.cells) >= MIN_CELLS_PER_LEVEL) & np.isfinite(law.nu_std)
    if not use.any():
        return None
    levels, nu_mean, nu_std = (np.asarray(v)[use].tolist() for v in (law.levels, law.nu_mean, law.nu_std))
    return PowerLawDrift(t0=law.t0, levels=levels, nu_mean=nu_mean, nu_std=nu_std)


def _power_law_error(first: NoisePolynomial, drift: PowerLawDrift, stats: LevelStats, g_max: float) -> float:
    """Largest relative std error, over fitted levels and times, of the power law's closed-form std."""
    x = stats.target[:, None] / g_max
    nu_mean = np.interp(stats.target, drift.levels, drift.nu_mean)[:, None]
    nu_std = np.interp(stats.target, drift.levels, drift.nu_std)[:, None]
    prog_mean = stats.target[:, None] + polyval(first.mean, x)
    _, std = power_law_moments(prog_mean, polyval(first.std, x), nu_mean, nu_std, stats.time, drift.t0)
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(std - stats.std) / stats.std
    return float(np.nanmax(np.where(stats.count >= MIN_CELLS_PER_LEVEL, error, np.nan)))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fit_measurements(
    data: Measurements,
    name: str,
    order: int = 4,
    read_window: float = 1.0,
    fitted_from: dict | None = None,
    split_seed: int = SPLIT_SEED,
    spread_model: str = "auto",
    held_out: bool = True,
) -> FitResult:
    """Fit measurements already read (see ``fit``); no goodness of fit. ``held_out``: also fit the fit half
    alone (``FitResult.validation_profile``, what the goodness of fit scores). Its linear algebra is small
    (least squares over levels, products of cells x times): BLAS runs on one thread (``one_blas_thread``)."""
    with one_blas_thread():
        return _fit_measurements(data, name, order, read_window, fitted_from, split_seed, spread_model, held_out)


def _fit_measurements(
    data: Measurements,
    name: str,
    order: int,
    read_window: float,
    fitted_from: dict | None,
    split_seed: int,
    spread_model: str,
    held_out: bool,
) -> FitResult:
    base = {
        "name": name,
        "technology": data.technology,
        "g_max": data.g_max,
        "source": data.source,
        "licence": data.licence,
        "fitted_from": {**(fitted_from or {}), "order": order, "min_cells_per_level": MIN_CELLS_PER_LEVEL},
    }
    read_noise = None
    if data.read_noise is not None:
        read_noise = fit_read_noise(data.read_noise, data.g_max, order, read_window)
        base["read_noise"] = ReadNoisePolynomial(window=read_window, std=read_noise.std)
    if data.relaxation is not None and data.relaxation.time.size >= 2:
        base["fitted_from"].update(split_seed=split_seed, spread_model=spread_model)
        result = _fit_relaxation(data.relaxation, data.g_max, base, order, split_seed, spread_model, held_out)
    elif data.programming is not None:
        p = data.programming
        stats = level_stats(p.target_conductance, p.conductance[:, None], np.zeros(1))
        poly = fit_level_noise(stats.target, stats.count[:, 0], stats.mean[:, 0], stats.std[:, 0], data.g_max, order)
        result = FitResult(DeviceProfile(**base, programming=Polynomials(poly.mean, poly.std)), stats, "none", {})
    else:
        result = FitResult(DeviceProfile(**base), None, "none", {})
    result.skipped, result.read_noise = data.skipped, read_noise
    return result


def _fit_relaxation(
    r: Relaxation, g_max: float, base: dict, order: int, split_seed: int, spread_model: str, held_out: bool
) -> FitResult:
    """Split, select the spread model on the validation half, fit all cells and the fit half alone."""
    index, targets = assign_levels(r.target_conductance)
    fit_half = split_cells(index, split_seed)

    def stats_of(cells: np.ndarray) -> LevelStats:
        return stats_of_levels(index[cells], targets, r.target_conductance[cells], r.conductance[cells], r.time)

    every = np.ones(index.size, dtype=bool)
    fit_stats, validation = stats_of(fit_half), stats_of(~fit_half)
    if not can_validate(fit_stats, validation):
        stats = stats_of(every)
        result = _relaxation_model(r, index, every, stats, without_validation(stats, spread_model), g_max, base, order)
        result.notes.append(
            f"too few cells to hold half out (a level needs {MIN_CELLS_PER_LEVEL} reads in each half): "
            "no model selection, and the goodness of fit is in-sample"
        )
        return result
    selection = select(fit_stats, validation, g_max, order, spread_model)
    result = _relaxation_model(r, index, every, stats_of(every), selection, g_max, base, order)
    result.validation, result.selection = validation, selection
    if held_out:
        power_law = result.drift_model == "power_law"
        half = _relaxation_model(r, index, fit_half, fit_stats, selection, g_max, base, order, power_law)
        result.validation_profile = half.profile
    return result


def _relaxation_model(
    r: Relaxation,
    index: np.ndarray,
    cells: np.ndarray,
    stats: LevelStats,
    selection: Selection,
    g_max: float,
    base: dict,
    order: int,
    power_law: bool | None = None,
) -> FitResult:
    """The spread table or the power law fitted to ``cells`` (N,) bool with level statistics ``stats``;
    ``power_law`` None: the power law if it holds, else that choice imposed."""
    conductance = r.conductance[cells]
    table = spread_table(stats, index[cells], r.target_conductance[cells], conductance, selection, g_max, order)
    result = FitResult(DeviceProfile(**base, spread=table), stats, "spread_table", {})
    if power_law is False:
        return result
    law = fit_power_law(index[cells], stats.target, conductance, r.time)
    drift = _power_law_drift(law) if law is not None else None
    if law is not None and law.excluded:
        result.notes.append(f"power law: {law.excluded} cells with a non-positive or missing first read not fitted")
    if drift is None:
        result.notes.append("power law: not fitted (fewer than 3 times or no level with positive reads)")
        return result
    first = fit_level_noise(stats.target, stats.count[:, 0], stats.mean[:, 0], stats.std[:, 0], g_max, order)
    result.power_law_error = _power_law_error(first, drift, stats, g_max)
    if power_law or result.power_law_error <= POWER_LAW_TOLERANCE:
        result.profile = DeviceProfile(**base, programming=Polynomials(first.mean, first.std), drift=drift)
        result.drift_model = "power_law"
    else:
        result.notes.append(
            f"power law rejected: its std is off by up to {result.power_law_error:.0%} (tolerance "
            f"{POWER_LAW_TOLERANCE:.0%}); the spread table is used"
        )
    return result


def _fit_file(path: Path, name: str | None, order: int, read_window: float, **options: object) -> FitResult:
    data = read(path)
    fitted_from = {"file": path.name, "sha256": file_sha256(path), "schema_version": SCHEMA_VERSION}
    fitted_from["importer"] = data.importer
    return fit_measurements(data, name or path.stem, order, read_window, fitted_from, **options)


def fit_with_report(
    path: str | os.PathLike,
    name: str | None = None,
    order: int = 4,
    read_window: float = 1.0,
    split_seed: int = SPLIT_SEED,
    spread_model: str = "auto",
) -> FitResult:
    """Read, validate and fit the measurement file at ``path``; the result includes the goodness of fit
    (on the validation half, of the profile fitted to the fit half, when there is relaxation data)."""
    result = _fit_file(Path(path), name, order, read_window, split_seed=split_seed, spread_model=spread_model)
    if result.validation is not None:
        result.goodness = goodness(result.validation_profile, result.validation)
    elif result.stats is not None:
        result.goodness = goodness(result.profile, result.stats)
    return result


def fit(
    path: str | os.PathLike,
    name: str | None = None,
    order: int = 4,
    read_window: float = 1.0,
    split_seed: int = SPLIT_SEED,
    spread_model: str = "auto",
) -> DeviceProfile:
    """The device profile fitted from the measurement file at ``path`` (HDF5, schema version 1).

    ``order``: polynomial order of the polynomial fits in x = g_target / g_max (at most the number of levels
    - 1); ``read_window``: seconds of repeated reads over which read noise is taken (slower changes are not
    read noise); ``name``: the profile's name (default: the file's stem); ``split_seed``: seed of the
    fit / validation split of each level's cells; ``spread_model``: "auto" (chosen on the validation half),
    "spline", "linear" or "polynomial" (``calibration.spread_fit``).
    """
    options = {"split_seed": split_seed, "spread_model": spread_model, "held_out": False}
    return _fit_file(Path(path), name, order, read_window, **options).profile
