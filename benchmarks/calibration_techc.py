#!/usr/bin/env python
"""The shipped techC device profile, its goodness of fit on held-out cells against the noise floor of the data,
and the figure in docs/calibration.md.

Converts the measured techC relaxation data (rram-relaxation/techC in the shared data folder) to the HDF5
schema, fits it (``calibration.fit``: spread model chosen on the validation half of each level's cells,
profile refitted to all cells), and writes the preset ``crossbar/presets/devices/techc.json``, the figure
``docs/figures/calibration_techc.png`` (validation-half vs fitted spread, mean offset and relative error per
level and time) and ``benchmarks/results/calibration_techc.json``: the validation errors per time and per
level beside the noise floor (``calibration.noise_floor``: the error the true std itself would score on the
validation half; analytic, bootstrap and split-half estimates) and the issue's targets (median <= 5 % at
every time, no level above 15 %).

    python benchmarks/calibration_techc.py [--order 4] [--draws 400] [--splits 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import data_label, shared_data, write_json_atomic

from calibration import fitting, goodness, importers, read
from calibration.noise_floor import noise_floor

ROOT = Path(__file__).resolve().parents[1]
MEDIAN_TARGET, LEVEL_TARGET = 0.05, 0.15  # the issue's: median |error| per time, and any level's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--order", type=int, default=4)
    parser.add_argument("--data", type=Path, help="technology folder (or its relaxation file); default techC")
    parser.add_argument("--profile", type=Path, default=ROOT / "crossbar" / "presets" / "devices" / "techc.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "calibration_techc.png")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "calibration_techc.json")
    parser.add_argument("--draws", type=int, default=400, help="bootstrap resamples of the validation half")
    parser.add_argument("--splits", type=int, default=20, help="re-splits for the split-half floor")
    parser.add_argument("--seeds", type=int, default=8, help="split seeds 0.. the model is also scored with")
    args = parser.parse_args()
    args.data = args.data or shared_data() / "rram-relaxation" / "techC"
    with tempfile.TemporaryDirectory() as folder:
        measurements = Path(folder) / "techc.h5"
        importers.convert("relaxation", args.data, measurements)
        result = fitting.fit_with_report(measurements, name="techc", order=args.order)
        split_seed = result.profile.fitted_from["split_seed"]
        floor = noise_floor(read(measurements).relaxation, split_seed, args.draws, args.splits, seed=1)
        other_splits = np.array(
            [
                np.nanmedian(np.abs(fitting.fit_with_report(measurements, split_seed=seed).goodness.std_error()), 0)
                for seed in range(args.seeds)
            ]
        )
    result.profile.save(args.profile)
    goodness.plot_fit(result, args.figure)
    print(goodness.format_fit(result))
    error = np.abs(result.goodness.std_error())
    stats = result.goodness.measured
    assert np.array_equal(floor.target, stats.target), "the floor is of other levels than the goodness"
    summary = floor.summary(MEDIAN_TARGET, LEVEL_TARGET)
    splits = (
        (f"model: mean of {len(other_splits)} splits", np.mean(other_splits, axis=0)),
        ("model: least of them", np.min(other_splits, axis=0)),
        ("model: largest of them", np.max(other_splits, axis=0)),
    )
    print(goodness.format_floor(result, floor, MEDIAN_TARGET, LEVEL_TARGET, splits))
    scored = result.goodness.fitted_levels.any(axis=1)
    write_json_atomic(
        args.out,
        {
            "data": data_label(args.data),
            "order": args.order,
            "drift_model": result.drift_model,
            "power_law_largest_std_error": result.power_law_error,
            "spread_model_per_time": [c.label() for c in result.selection.std],
            "times_s": stats.time.tolist(),
            "validation_median_abs_std_error_per_time": np.nanmedian(error, axis=0).tolist(),
            "validation_noise_floor_per_time": np.nanmedian(result.goodness.noise_floor(), axis=0).tolist(),
            "validation_largest_abs_std_error_per_time": np.nanmax(error, axis=0).tolist(),
            "validation_median_abs_std_error": float(np.nanmedian(error)),
            "levels_scored": int(np.sum(result.goodness.fitted_levels.any(axis=1))),
            "validation_cells": int(stats.count[:, 0].sum()),
            "targets": {"median_per_time": MEDIAN_TARGET, "largest_level": LEVEL_TARGET},
            "noise_floor_per_time": summary,
            "validation_median_abs_std_error_per_time_by_split_seed": other_splits.tolist(),
            "noise_floor_settings": {"bootstrap_draws": args.draws, "splits": args.splits, "seed": 1},
            "per_level": {
                "target_S": stats.target[scored].tolist(),
                "validation_reads": stats.count[scored].astype(int).tolist(),
                "kurtosis": stats.kurtosis[scored].tolist(),
                "abs_std_error": error[scored].tolist(),
                **{f"floor_{name}": np.asarray(v)[scored].tolist() for name, v in floor.per_level().items()},
            },
        },
    )
    print(f"wrote {args.profile}, {args.figure}, {args.out}")


if __name__ == "__main__":
    main()
