#!/usr/bin/env python
"""Speed of calibration.fit on the whole techC relaxation set (about 16k cells x 6 times).

In one run, with the same thread settings for both:
  read_baseline  open the HDF5 file with h5py and read every dataset into numpy (the least any fit must do)
  fit            calibration.fit(path): validate, level statistics, power-law and spread-table fits,
                 the choice between them, the held-out model selection and the refit to all cells
                 (the profile, no goodness-of-fit sampling)
  fit_report     calibration.fitting.fit_with_report: the fit plus the goodness of fit the CLI prints
                 (the profile sampled at every level and time), informational
Also reported (once, informational): converting the lab TSV to HDF5. Target: fit under 1 s.

    python benchmarks/bench_calibration.py [--threads N] [--reps 5] [--out benchmarks/results/calibration.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from common import available_cores, configure_threads, machine_info, timed, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
TECHC = ROOT.parent / "shared" / "data" / "rram-relaxation" / "techC" / "relaxdata.min.tsv.gz"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "calibration.json"
TARGET_S = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--data", type=Path, default=TECHC)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threading = configure_threads(args.threads, "default")

    import h5py
    import numpy as np

    from calibration import fit, fitting, importers

    results: dict[str, Any] = {"machine": machine_info(threading), "data": str(args.data.relative_to(ROOT.parent))}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "techc.h5"
        start = time.perf_counter()
        measurements = importers.convert("relaxation", args.data, path)
        results["convert_s"] = time.perf_counter() - start
        results["cells"], results["times"] = measurements.relaxation.conductance.shape

        def read_all() -> None:
            with h5py.File(path, "r") as h5:
                h5.visititems(lambda _, node: np.asarray(node[()]) if isinstance(node, h5py.Dataset) else None)

        results["read_baseline"] = timed(read_all, args.reps)
        results["fit"] = timed(lambda: fit(path), args.reps)
        results["fit_report"] = timed(lambda: fitting.fit_with_report(path), max(1, args.reps // 2))
    fit_s, read_s = results["fit"]["median_s"], results["read_baseline"]["median_s"]
    results["fit_over_read"] = fit_s / read_s
    results["target_s"] = TARGET_S
    results["pass"] = fit_s < TARGET_S
    print(f"convert TSV -> HDF5 {results['convert_s']:.2f} s ({results['cells']} cells x {results['times']} times)")
    print(f"read baseline       {read_s * 1e3:.1f} ms")
    print(f"fit                 {fit_s:.3f} s  ({results['fit_over_read']:.0f}x the read)")
    print(f"fit + goodness      {results['fit_report']['median_s']:.2f} s")
    print(f"target fit < {TARGET_S:g} s: {'PASS' if results['pass'] else 'FAIL'}")
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
