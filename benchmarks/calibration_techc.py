#!/usr/bin/env python
"""The shipped techC device profile, its goodness of fit on held-out cells and the figure in docs/calibration.md.

Converts the measured techC relaxation data (../shared/data/rram-relaxation/techC) to the HDF5 schema, fits
it (``calibration.fit``: spread model chosen on the validation half of each level's cells, profile refitted
to all cells), and writes the preset ``crossbar/presets/devices/techc.json``, the figure
``docs/figures/calibration_techc.png`` (validation-half vs fitted spread, mean offset and relative error per
level and time) and ``benchmarks/results/calibration_techc.json`` (validation errors, summarised).

    python benchmarks/calibration_techc.py [--order 4]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import data_label, shared_data, write_json_atomic

from calibration import fitting, goodness, importers

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--order", type=int, default=4)
    parser.add_argument("--data", type=Path, help="technology folder (or its relaxation file); default techC")
    parser.add_argument("--profile", type=Path, default=ROOT / "crossbar" / "presets" / "devices" / "techc.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "calibration_techc.png")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "calibration_techc.json")
    args = parser.parse_args()
    args.data = args.data or shared_data() / "rram-relaxation" / "techC"
    with tempfile.TemporaryDirectory() as folder:
        measurements = Path(folder) / "techc.h5"
        importers.convert("relaxation", args.data, measurements)
        result = fitting.fit_with_report(measurements, name="techc", order=args.order)
    result.profile.save(args.profile)
    goodness.plot_fit(result, args.figure)
    print(goodness.format_fit(result))
    error = np.abs(result.goodness.std_error())
    stats = result.goodness.measured
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
        },
    )
    print(f"wrote {args.profile}, {args.figure}, {args.out}")


if __name__ == "__main__":
    main()
