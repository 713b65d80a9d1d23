#!/usr/bin/env python
"""Speed of calibration.fit on the whole techC relaxation set (about 16k cells x 6 times), against the fit
it replaced, in one run.

Two worker processes with the same thread settings, each importing its own copy of the code:
  new   this checkout: validate, level statistics, power-law and spread-table fits, the choice between
        them, the held-out model selection and the refit to all cells (``calibration.fit``, the profile, no
        goodness-of-fit sampling)
  old   the code at --old-commit (default: main before issue 16, the per-time quartic fit), checked out with
        ``git archive`` into a temporary folder: the same ``calibration.fit`` call on its own conversion
        of the same file
The fits are interleaved: each round times one fit in each worker, the order alternating between rounds,
with the load average recorded per round. Wall time (perf_counter) and CPU time (process_time, all threads
of the worker) per fit, median and min over the rounds, and their ratios new / old. Informational: the
read baseline (h5py reads every dataset), ``fitting.fit_with_report`` (the fit plus the goodness of fit the
CLI prints) and the TSV -> HDF5 conversion. Target: the new fit under 1 s (wall, median).

    python benchmarks/bench_calibration.py [--threads N] [--reps 7] [--old-commit REV] [--data TSV]
                                           [--out benchmarks/results/calibration.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import available_cores, configure_threads, data_label, machine_info, shared_data, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "calibration.json"
OLD_COMMIT = "54d2c7c"  # main before issue 16: per-time quartic spread, power law, no held-out selection
TARGET_S = 1.0


def _worker(source: Path, data: Path, threads: int, importer: str, folder: Path) -> None:
    """Serve timing requests on stdin ("fit", "report", "read"), one JSON line each on stdout, with the
    calibration package of ``source`` first on the path."""
    sys.path.insert(0, str(source))
    configure_threads(threads, "default")
    import h5py
    import numpy as np

    from calibration import fit, fitting, importers

    path = folder / "techc.h5"
    start = time.perf_counter()
    measurements = importers.convert(importer, data, path)
    convert_s = time.perf_counter() - start

    def read_all() -> None:
        with h5py.File(path, "r") as h5:
            h5.visititems(lambda _, node: np.asarray(node[()]) if isinstance(node, h5py.Dataset) else None)

    tasks = {"fit": lambda: fit(path), "report": lambda: fitting.fit_with_report(path), "read": read_all}
    fit(path)  # warm-up
    ready = {"calibration": str(Path(sys.modules["calibration"].__file__).parent), "convert_s": convert_s}
    ready["cells"], ready["times"] = measurements.relaxation.conductance.shape
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        wall, cpu = time.perf_counter(), time.process_time()
        tasks[line.strip()]()
        print(json.dumps({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}), flush=True)


class Worker:
    """A worker process (``_worker``) and its answers."""

    def __init__(self, source: Path, data: Path, threads: int, importer: str, folder: Path) -> None:
        command = [sys.executable, __file__, "--worker", str(source), "--data", str(data), "--threads", str(threads)]
        command += ["--importer", importer, "--folder", str(folder)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self._answer()

    def _answer(self) -> dict[str, Any]:
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"worker exited with status {self.process.wait()}")

    def time(self, task: str) -> dict[str, float]:
        self.process.stdin.write(task + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def _summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    """Median and min wall and CPU seconds of ``samples`` (worker answers), and the samples."""
    summary: dict[str, Any] = {}
    for kind in ("wall", "cpu"):
        values = [sample[f"{kind}_s"] for sample in samples]
        summary[f"{kind}_median_s"], summary[f"{kind}_min_s"] = statistics.median(values), min(values)
    return {**summary, "samples": samples}


def _old_source(commit: str, folder: Path) -> str:
    """Check out calibration/ and crossbar/ of ``commit`` into ``folder``; the full commit id."""
    full = subprocess.run(["git", "rev-parse", commit], cwd=ROOT, capture_output=True, text=True, check=True)
    archive = subprocess.run(["git", "archive", commit, "calibration", "crossbar"], cwd=ROOT, capture_output=True)
    if archive.returncode:
        raise SystemExit(f"--old-commit {commit}: git archive failed: {archive.stderr.decode().strip()}")
    folder.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return full.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--reps", type=int, default=7, help="interleaved rounds (one fit of each per round)")
    parser.add_argument("--data", type=Path, help="relaxation TSV (default: techC in the shared data folder)")
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--importer", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.data, args.threads, args.importer, args.folder)
        return
    threading = configure_threads(args.threads, "default")
    data = args.data or shared_data() / "rram-relaxation" / "techC" / "relaxdata.min.tsv.gz"
    results: dict[str, Any] = {"machine": machine_info(threading), "data": data_label(data), "target_s": TARGET_S}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        results["old_commit"] = _old_source(args.old_commit, folder / "old")
        workers = {
            "new": Worker(ROOT, data, args.threads, "relaxation", folder),
            "old": Worker(folder / "old", data, args.threads, "techc-relaxation", folder / "old"),
        }
        samples: dict[str, list[dict[str, float]]] = {"new": [], "old": []}
        load = []
        for round_ in range(args.reps):
            for name in ("new", "old") if round_ % 2 == 0 else ("old", "new"):
                samples[name].append(workers[name].time("fit"))
            load.append(os.getloadavg()[0])
        report = [workers["new"].time("report") for _ in range(max(1, args.reps // 2))]
        read = [workers["new"].time("read") for _ in range(args.reps)]
        for worker in workers.values():
            worker.close()
    for name, worker in workers.items():
        results[name] = {**worker.ready, "fit": _summary(samples[name])}
    results["new"]["fit_report"] = _summary(report)
    results["new"]["read_baseline"] = _summary(read)
    results["loadavg_1min_per_round"] = load
    new, old = results["new"]["fit"], results["old"]["fit"]
    results["new_over_old_wall"] = new["wall_median_s"] / old["wall_median_s"]
    results["new_over_old_cpu"] = new["cpu_median_s"] / old["cpu_median_s"]
    results["pass"] = new["wall_median_s"] < TARGET_S
    print(f"{results['new']['cells']} cells x {results['new']['times']} times, {args.threads} thread(s), ", end="")
    print(f"load {min(load):.1f}-{max(load):.1f}, {args.reps} interleaved rounds")
    for name in ("old", "new"):
        fit = results[name]["fit"]
        print(
            f"{name} fit   wall {fit['wall_median_s']:.3f} s (min {fit['wall_min_s']:.3f})  "
            f"cpu {fit['cpu_median_s']:.3f} s (min {fit['cpu_min_s']:.3f})"
        )
    print(f"new / old     wall {results['new_over_old_wall']:.2f}   cpu {results['new_over_old_cpu']:.2f}")
    print(f"read baseline {results['new']['read_baseline']['wall_median_s'] * 1e3:.1f} ms")
    print(f"fit + goodness {results['new']['fit_report']['wall_median_s']:.3f} s (new)")
    print(f"convert TSV -> HDF5 {results['new']['convert_s']:.2f} s (new)")
    print(f"target new fit < {TARGET_S:g} s: {'PASS' if results['pass'] else 'FAIL'}")
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
