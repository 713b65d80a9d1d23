"""Human-readable summaries of a conversion and of a fit (goodness of fit per level and time), and its plot."""

from __future__ import annotations

import os

import numpy as np

from calibration.curve_fits import MIN_CELLS_PER_LEVEL
from calibration.fitting import FitResult
from calibration.noise_floor import NoiseFloor
from calibration.schema import Measurements
from crossbar.fileio import write_figure_atomic

MICRO = 1e6  # siemens -> microsiemens, for display only


def _skipped(skipped: dict[str, int]) -> list[str]:
    return [f"  skipped: {reason}: {count}" for reason, count in skipped.items()]


def format_measurements(data: Measurements) -> str:
    """What a measurement file holds: device, sections and their sizes, what was skipped."""
    lines = [f"technology {data.technology!r}, g_max {data.g_max * MICRO:g} uS, source {data.source!r}"]
    if data.programming is not None:
        lines.append(f"  programming: {data.programming.cell.size} cells")
    if data.relaxation is not None:
        times = ", ".join(f"{t:g}" for t in data.relaxation.time)
        lines.append(
            f"  relaxation: {data.relaxation.cell.size} cells at {data.relaxation.time.size} times ({times} s)"
        )
    if data.read_noise is not None:
        n = data.read_noise
        lines.append(f"  read_noise: {n.cell.size} cells, {n.conductance.shape[1]} reads each at {n.sample_rate:g} Hz")
    return "\n".join(lines + _skipped(data.skipped))


def _selection_lines(result: FitResult) -> list[str]:
    """The spread model chosen at each time and the validation error of every form (best of its settings)."""
    selection = result.selection
    lines = ["  spread model chosen on the validation half: median |relative std error| of each form's curve"]
    for k, t in enumerate(result.validation.time):
        errors = selection.std_errors[k]
        best: dict[str, float] = {}
        for label, error in errors.items():
            form = label.split()[0]
            best[form] = min(best.get(form, np.inf), error)
        forms = ", ".join(f"{form} {error:.1%}" for form, error in best.items())
        lines.append(f"    t = {t:g} s: std {selection.std[k].label()}, mean {selection.mean[k].label()} ({forms})")
    return lines


def format_fit(result: FitResult) -> str:
    """Goodness of fit per level and time: measured and fitted std (uS) and the relative error; with
    relaxation data, on the validation half, of the profile fitted to the other half."""
    profile = result.profile
    lines = [f"profile {profile.name!r} ({profile.technology}, fitted at g_max {profile.g_max * MICRO:g} uS)"]
    lines.append(f"  drift model: {result.drift_model}")
    if result.power_law_error is not None:
        lines.append(f"  power law: largest relative std error {result.power_law_error:.1%}")
    lines += [f"  {note}" for note in result.notes] + _skipped(result.skipped)
    if result.read_noise is not None:
        rn = result.read_noise
        lines.append(f"  read noise over {rn.window:g} s windows, per cell (mean uS: measured std uS):")
        lines += [f"    {g * MICRO:8.3f}: {s * MICRO:.4f}" for g, s in zip(rn.conductance, rn.measured, strict=True)]
    if result.selection is not None:
        lines += _selection_lines(result)
    goodness = result.goodness
    if goodness is None:
        return "\n".join(lines)
    stats, error = goodness.measured, goodness.std_error()
    if result.validation is not None:
        cells = int(stats.count[:, 0].sum())
        lines.append(
            f"  goodness on the validation half ({cells} cells), of the profile fitted to the other half "
            f"(split seed {profile.fitted_from.get('split_seed')}); the profile written is fitted to all cells"
        )
    spread = (result.validation_profile or profile).spread
    if spread is not None:
        lo, hi = spread.conductance[0], spread.conductance[-1]
        lines.append(f"  modelled range {lo * MICRO:.3f} to {hi * MICRO:.3f} uS ({spread.outside} outside it: *)")
    lines.append("  std of g - g_target per level and time: measured / fitted uS (relative error); - = not fitted")
    lines.append("  target uS  cells | " + " | ".join(f"{f't = {t:g} s':^22}" for t in stats.time))
    unfitted = 0
    for level, target in enumerate(stats.target):
        if not goodness.fitted_levels[level].any():
            unfitted += 1
            continue
        cells = []
        for k in range(stats.time.size):
            if not goodness.fitted_levels[level, k]:
                cells.append(f"{'-':^22}")
                continue
            measured, fitted = stats.std[level, k] * MICRO, goodness.fitted_std[level, k] * MICRO
            cells.append(f"{measured:6.3f} / {fitted:6.3f} ({error[level, k]:+4.0%})")
        mark = "*" if spread is not None and not spread.conductance[0] <= target <= spread.conductance[-1] else " "
        lines.append(f" {mark}{target * MICRO:9.3f} {int(stats.count[level].max()):6d} | " + " | ".join(cells))
    if unfitted:
        lines.append(f"  ({unfitted} levels with fewer than {MIN_CELLS_PER_LEVEL} cells are not fitted)")
    median = np.nanmedian(np.abs(error), axis=0)
    floor = np.nanmedian(goodness.noise_floor(), axis=0)
    worst = np.nanmax(np.abs(error), axis=0)
    lines.append("  median |error|      | " + " | ".join(f"{m:^22.1%}" for m in median))
    lines.append("  noise floor         | " + " | ".join(f"{f:^22.1%}" for f in floor))
    lines.append("  largest |error|     | " + " | ".join(f"{w:^22.1%}" for w in worst))
    lines.append(
        "  (noise floor: the median |error| a perfect model would show, from the scatter of the measured std "
        "of heavy-tailed reads alone)"
    )
    return "\n".join(lines)


def format_floor(
    result: FitResult,
    floor: NoiseFloor,
    threshold: float = 0.05,
    level_threshold: float = 0.15,
    extra: tuple[tuple[str, np.ndarray], ...] = (),
) -> str:
    """The held-out std error per time beside the noise floor estimates of ``floor`` (percent): median and
    largest |error| of the goodness of ``result``, the rows ``extra`` (label, (T,) fractions) after the
    median, and from the bootstrap the chance that the true std scores a median <= ``threshold`` and no
    level above ``level_threshold``."""
    error = np.abs(result.goodness.std_error())
    summary = floor.summary(threshold, level_threshold)
    rows = [
        ("model: median |error|", np.nanmedian(error, axis=0)),
        *extra,
        ("floor: analytic", summary["analytic"]),
        ("floor: bootstrap", summary["bootstrap"]),
        ("floor: bootstrap 5 %", summary["bootstrap_p5"]),
        ("floor: bootstrap 95 %", summary["bootstrap_p95"]),
        ("floor: split-half / sqrt 2", summary["split_half"]),
        ("split-half raw", summary["split_half_raw"]),
        (f"P(true std <= {threshold:.0%})", summary[f"bootstrap_chance_at_most_{threshold:g}"]),
        ("model: largest |error|", np.nanmax(error, axis=0)),
        ("true std: largest (boot)", summary["bootstrap_largest_level"]),
        (f"P(true largest <= {level_threshold:.0%})", summary[f"bootstrap_chance_largest_at_most_{level_threshold:g}"]),
    ]
    lines = [
        "  held-out std error against the noise floor, the error the true std itself would score (%; P: chance,",
        "  from the bootstrap; calibration/noise_floor.py)",
        f"    {'t (s)':<28}" + "".join(f"{t:>8g}" for t in floor.time),
    ]
    for label, values in rows:
        cells = (f"{v:8.2f}" if label.startswith("P(") else f"{100 * v:8.1f}" for v in values)
        lines.append(f"    {label:<28}" + "".join(cells))
    return "\n".join(lines)


def plot_fit(result: FitResult, path: str | os.PathLike) -> None:
    """Measured (points) and fitted (lines) std and mean offset per level, one colour per time, and the
    relative std error per level with the noise floor; on the validation half with relaxation data. PNG."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plot: needs matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    goodness = result.goodness
    if goodness is None:
        raise ValueError("plot: the fit has no level statistics to plot (read noise only)")
    stats, error, floor = goodness.measured, goodness.std_error(), goodness.noise_floor()
    fig, (ax_std, ax_mean, ax_error) = plt.subplots(1, 3, figsize=(15, 4.2))
    for k, t in enumerate(stats.time):
        use = goodness.fitted_levels[:, k]
        x = stats.target[use] * MICRO
        colour = f"C{k % 10}"
        ax_std.plot(x, stats.std[use, k] * MICRO, "o", ms=3, color=colour, label=f"t = {t:g} s")
        ax_std.plot(x, goodness.fitted_std[use, k] * MICRO, "-", color=colour)
        ax_mean.plot(x, stats.mean[use, k] * MICRO, "o", ms=3, color=colour)
        ax_mean.plot(x, goodness.fitted_mean[use, k] * MICRO, "-", color=colour)
        ax_error.plot(x, 100 * error[use, k], "o-", ms=3, lw=0.8, color=colour)
    scored = goodness.fitted_levels.any(axis=1)
    level_floor = 100 * np.nanmedian(floor[scored], axis=1)
    ax_error.plot(stats.target[scored] * MICRO, level_floor, "k--", lw=1, label="noise floor (median over times)")
    ax_error.plot(stats.target[scored] * MICRO, -level_floor, "k--", lw=1)
    half = "validation half" if result.validation is not None else "measured"
    ax_std.set(xlabel="target conductance (uS)", ylabel="std of g (uS)")
    ax_std.set_title(f"spread: {half} (dots), profile (lines)")
    ax_mean.set(xlabel="target conductance (uS)", ylabel="mean of g - g_target (uS)", title="mean offset")
    ax_error.set(xlabel="target conductance (uS)", ylabel="(fitted - measured) / measured std (%)", ylim=(-60, 60))
    ax_error.set_title("relative std error per level and time")
    ax_std.legend(fontsize="small")
    ax_error.legend(fontsize="small")
    fig.suptitle(f"{result.profile.name}: {result.drift_model} fit, {result.profile.technology}")
    fig.tight_layout()
    write_figure_atomic(fig, path, dpi=110)
    plt.close(fig)
