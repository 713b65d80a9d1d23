"""Human-readable summaries of a conversion and of a fit (goodness of fit per level and time), and its plot."""

from __future__ import annotations

import os

import numpy as np

from calibration.curve_fits import MIN_CELLS_PER_LEVEL
from calibration.fitting import FitResult
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


def format_fit(result: FitResult) -> str:
    """Goodness of fit per level and time: measured and fitted std (uS) and the relative error."""
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
    goodness = result.goodness
    if goodness is None:
        return "\n".join(lines)
    stats, error = goodness.measured, goodness.std_error()
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
        lines.append(f"  {target * MICRO:9.3f} {int(stats.count[level].max()):6d} | " + " | ".join(cells))
    if unfitted:
        lines.append(f"  ({unfitted} levels with fewer than {MIN_CELLS_PER_LEVEL} cells are not fitted)")
    median = np.nanmedian(np.abs(error), axis=0)
    worst = np.nanmax(np.abs(error), axis=0)
    lines.append("  median |error|      | " + " | ".join(f"{m:^22.1%}" for m in median))
    lines.append("  largest |error|     | " + " | ".join(f"{w:^22.1%}" for w in worst))
    return "\n".join(lines)


def plot_fit(result: FitResult, path: str | os.PathLike) -> None:
    """Measured (points) and fitted (lines) std and mean offset per level, one colour per time; PNG, atomic."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plot: needs matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    goodness = result.goodness
    if goodness is None:
        raise ValueError("plot: the fit has no level statistics to plot (read noise only)")
    stats = goodness.measured
    fig, (ax_std, ax_mean) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, t in enumerate(stats.time):
        use = goodness.fitted_levels[:, k]
        x = stats.target[use] * MICRO
        colour = f"C{k % 10}"
        ax_std.plot(x, stats.std[use, k] * MICRO, "o", ms=3, color=colour, label=f"t = {t:g} s")
        ax_std.plot(x, goodness.fitted_std[use, k] * MICRO, "-", color=colour)
        ax_mean.plot(x, stats.mean[use, k] * MICRO, "o", ms=3, color=colour)
        ax_mean.plot(x, goodness.fitted_mean[use, k] * MICRO, "-", color=colour)
    ax_std.set(
        xlabel="target conductance (uS)", ylabel="std of g (uS)", title="spread: measured (dots), profile (lines)"
    )
    ax_mean.set(xlabel="target conductance (uS)", ylabel="mean of g - g_target (uS)", title="mean offset")
    ax_std.legend(fontsize="small")
    fig.suptitle(f"{result.profile.name}: {result.drift_model} fit, {result.profile.technology}")
    fig.tight_layout()
    write_figure_atomic(fig, path, dpi=110)
    plt.close(fig)
