#!/usr/bin/env python
"""The shipped techC device profile, its goodness of fit and the figure in docs/calibration.md.

Converts the measured techC relaxation data (../shared/data/rram-relaxation/techC) to the HDF5 schema, fits
it (``calibration.fit``, polynomial order 4), and writes the preset ``crossbar/presets/devices/techc.json``, the
figure ``docs/figures/calibration_techc.png`` (measured vs fitted spread and mean offset per level and time)
and ``benchmarks/results/calibration_techc.json`` (relative std error per level and time, summarised).

    python benchmarks/calibration_techc.py [--order 4]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import write_json_atomic

from calibration import fitting, importers, report

ROOT = Path(__file__).resolve().parents[1]
TECHC = ROOT.parent / "shared" / "data" / "rram-relaxation" / "techC" / "relaxdata.min.tsv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--order", type=int, default=4)
    parser.add_argument("--data", type=Path, default=TECHC)
    parser.add_argument("--profile", type=Path, default=ROOT / "crossbar" / "presets" / "devices" / "techc.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "calibration_techc.png")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "calibration_techc.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        measurements = Path(folder) / "techc.h5"
        importers.convert("techc-relaxation", args.data, measurements)
        result = fitting.fit_with_report(measurements, name="techc", order=args.order)
    result.profile.save(args.profile)
    report.plot_fit(result, args.figure)
    print(report.format_fit(result))
    error = np.abs(result.goodness.std_error())
    stats = result.goodness.measured
    write_json_atomic(
        args.out,
        {
            "data": str(args.data.relative_to(ROOT.parent)),
            "order": args.order,
            "drift_model": result.drift_model,
            "power_law_largest_std_error": result.power_law_error,
            "times_s": stats.time.tolist(),
            "median_abs_std_error_per_time": np.nanmedian(error, axis=0).tolist(),
            "largest_abs_std_error_per_time": np.nanmax(error, axis=0).tolist(),
            "median_abs_std_error": float(np.nanmedian(error)),
            "levels_fitted": int(np.sum(result.goodness.fitted_levels.any(axis=1))),
            "cells": int(stats.count[:, 0].sum()),
        },
    )
    print(f"wrote {args.profile}, {args.figure}, {args.out}")


if __name__ == "__main__":
    main()
