#!/usr/bin/env python
"""Calibration on technologies it was and was not developed on: held-out spread error, old quartic vs new model.

For every technology folder of the RRAM relaxation data (``relaxdata*.tsv.gz`` beside ``settings.json``):
convert it (``crossbar convert relaxation``), split each level's cells into a fit and a validation half
(seed 0), and score on the validation half, per read time, the median |relative std error| of two profiles
fitted to the fit half (``fitting.goodness``: the quartic sampled through ``crossbar.device``, ``--draws`` per
level and time; the spread table's exact moments, its sampling checked in tests):

  quartic  the model used before: a mean-offset and a std polynomial of order 4 in g_target / g_max at
           every time (``RelaxationTable``, the ReRamWan2022 form, Gaussian)
  new      the nonparametric spread table: form and smoothing chosen per time on the validation half,
           empirical quantiles (``calibration.spread_fit``)

with the noise floor (the median |error| a perfect model would show from the scatter of the held-out std
alone) and, for reference, the quartic's in-sample error on all cells (the number quoted before); a plot
per technology (docs/figures/calibration_heldout_NAME.png). Defaults:
techC (../shared/data, the technology the calibration was developed on) and techB (the never-seen one: its
full folder in ../shared/data if present, else the half of its cells shipped in tests/data).

    python benchmarks/calibration_technologies.py [--tech NAME=FOLDER ...] [--out PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from common import configure_threads, data_label, machine_info, shared_data, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_TECHB = ROOT / "tests" / "data" / "rram-relaxation" / "techB"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "calibration_technologies.json"


def default_technologies() -> dict[str, Path]:
    shared = shared_data() / "rram-relaxation"
    techb = shared / "techB" if (shared / "techB" / "settings.json").is_file() else SHIPPED_TECHB
    return {"techC": shared / "techC", "techB": techb}


def quartic_profile(stats: Any, g_max: float, order: int, name: str) -> Any:
    """The model used before: per-time mean and std polynomials (``curve_fits.fit_level_noise``)."""
    from calibration.curve_fits import fit_level_noise
    from crossbar.profile import DeviceProfile, RelaxationTable

    fits = [
        fit_level_noise(stats.target, stats.count[:, k], stats.mean[:, k], stats.std[:, k], g_max, order)
        for k in range(stats.time.size)
    ]
    table = RelaxationTable(times=stats.time.tolist(), mean=[f.mean for f in fits], std=[f.std for f in fits])
    return DeviceProfile(name=name, technology=name, g_max=g_max, relaxation=table)


def per_time(goodness: Any) -> dict[str, list[float]]:
    import numpy as np

    error = np.abs(goodness.std_error())
    return {
        "median_abs_std_error": np.nanmedian(error, axis=0).tolist(),
        "largest_abs_std_error": np.nanmax(error, axis=0).tolist(),
    }


def technology(name: str, folder: Path, order: int, figure: Path) -> dict[str, Any]:
    import numpy as np

    import calibration
    from calibration import fitting, goodness, importers
    from calibration.levels import assign_levels, split_cells, stats_of_levels

    source = importers.relaxation_file(folder)
    with tempfile.TemporaryDirectory() as temporary:
        path = Path(temporary) / f"{name}.h5"
        importers.convert("relaxation", source, path)
        data = calibration.read(path)
    start = time.perf_counter()
    result = fitting.fit_measurements(data, name, order)
    fit_s = time.perf_counter() - start
    r = data.relaxation
    index, targets = assign_levels(r.target_conductance)
    fit_half = split_cells(index, fitting.SPLIT_SEED)
    stats_fit = stats_of_levels(
        index[fit_half], targets, r.target_conductance[fit_half], r.conductance[fit_half], r.time
    )
    new = fitting.goodness(result.validation_profile, result.validation)
    result.goodness = new
    goodness.plot_fit(result, figure)
    quartic = fitting.goodness(quartic_profile(stats_fit, data.g_max, order, name), result.validation)
    in_sample = fitting.goodness(quartic_profile(result.stats, data.g_max, order, name), result.stats)
    floor = np.nanmedian(new.noise_floor(), axis=0)
    summary = {
        "file": data_label(source),
        "sha256": fitting.file_sha256(source),
        "g_max_S": data.g_max,
        "cells": int(r.cell.size),
        "validation_cells": int(np.sum(~fit_half)),
        "times_s": r.time.tolist(),
        "drift_model": result.drift_model,
        "spread_model_per_time": [c.label() for c in result.selection.std],
        "fit_s": fit_s,
        "new": per_time(new),
        "quartic": per_time(quartic),
        "quartic_in_sample_all_cells": per_time(in_sample),
        "noise_floor": floor.tolist(),
        "levels_scored": int(np.sum(new.fitted_levels.any(axis=1))),
    }
    for model in ("new", "quartic"):
        summary[model]["median_over_times"] = float(np.median(summary[model]["median_abs_std_error"]))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tech", action="append", default=[], help="NAME=FOLDER (repeatable; default techC, techB)")
    parser.add_argument("--order", type=int, default=4, help="order of the quartic baseline")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--draws", type=int, default=20000, help="samples per level and time of the quartic")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures", help="held-out fit plots")
    args = parser.parse_args()
    threading = configure_threads(args.threads, "default")
    from calibration import fitting

    fitting.PREDICTION_DRAWS = args.draws
    technologies = dict(item.split("=", 1) for item in args.tech) if args.tech else default_technologies()
    results: dict[str, Any] = {"machine": machine_info(threading), "draws": args.draws, "technologies": {}}
    for name, folder in technologies.items():
        figure = args.figures / f"calibration_heldout_{name}.png"
        summary = technology(name, Path(folder), args.order, figure)
        results["technologies"][name] = summary
        print(
            f"{name} ({summary['cells']} cells, {summary['validation_cells']} held out), fit {summary['fit_s']:.2f} s"
        )
        print("  t (s)      " + " ".join(f"{t:>8g}" for t in summary["times_s"]))
        for label, values in (
            ("quartic", summary["quartic"]["median_abs_std_error"]),
            ("new", summary["new"]["median_abs_std_error"]),
            ("noise floor", summary["noise_floor"]),
            ("quartic in", summary["quartic_in_sample_all_cells"]["median_abs_std_error"]),
        ):
            print(f"  {label:<11}" + " ".join(f"{100 * v:7.1f}%" for v in values))
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
