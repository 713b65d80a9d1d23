#!/usr/bin/env python
"""Speed of a sweep: serial in one process against a two-worker dask LocalCluster, same grid, same numbers.

In one run, the grid (digits MLP on the default chip: PCM at 1 h, 1 ohm wires; ``--bits`` x ``--seeds``) is
evaluated twice, each into its own results file:
  serial     crossbar.sweep.run_sweep without a client: the points one after another in this process
  cluster    the same through crossbar.sweep.local_cluster(--workers): one single-threaded process per worker
Both are warm: this process and every worker first evaluate one point outside the grid (imports, numba JIT,
the workload's data), timed separately, as is the cluster's start. Every process runs torch and numba on one
thread. The numbers of the two results files are checked equal. Reported: seconds of each, the speedup
serial / cluster (ideal: the number of workers on an idle machine), and the speedup counting the cluster's
start and warm-up. The machine may be shared: the load average before and after is recorded.

    python benchmarks/bench_sweep.py [--workers 2] [--bits 4 8] [--seeds 4] [--out benchmarks/results/sweep.json]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import configure_threads, machine_info, write_json_atomic

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "sweep.json"
WARMUP_SEED = 10_000  # a chip instance outside the timed grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 8], help="ADC bits of the grid")
    parser.add_argument("--seeds", type=int, default=4, help="chip instances per ADC setting")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threading = configure_threads(1, "default")

    import pandas as pd
    from distributed import Client

    from crossbar.sweep import expand, local_cluster, parse_spec, run_sweep
    from crossbar.sweep.runner import run_point, single_threaded

    grid = {"workloads": ["digits-mlp"], "chips": ["default"], "parameters": {"adc.bits": args.bits}}
    spec = parse_spec({"name": "bench", **grid, "seeds": args.seeds})
    warmup = expand(parse_spec({"name": "warmup", **grid, "seeds": [WARMUP_SEED]}))[0]
    results = {"machine": machine_info(threading), "grid": {**grid, "seeds": args.seeds}, "workers": args.workers}
    results["loadavg_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        with single_threaded():
            run_point(warmup)
        results["serial_warmup_s"] = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        serial = run_sweep(spec, Path(folder) / "serial.parquet", progress=False)
        results["serial_s"] = time.perf_counter() - start
        results["serial_cores_used"] = (time.process_time() - cpu) / results["serial_s"]

        start = time.perf_counter()
        with local_cluster(args.workers) as cluster, Client(cluster) as client:
            results["cluster_start_s"] = time.perf_counter() - start
            start = time.perf_counter()
            client.run(run_point, warmup)  # every worker, in parallel
            results["cluster_warmup_s"] = time.perf_counter() - start
            start, cpu = time.perf_counter(), client.run(time.process_time)
            parallel = run_sweep(spec, Path(folder) / "cluster.parquet", client, progress=False)
            results["cluster_s"] = time.perf_counter() - start
            used = sum(t - cpu[w] for w, t in client.run(time.process_time).items())
            results["cluster_cores_used"] = used / results["cluster_s"]
        a = pd.read_parquet(Path(folder) / "serial.parquet").set_index("key").sort_index()
        b = pd.read_parquet(Path(folder) / "cluster.parquet").set_index("key").sort_index()
    results["loadavg_after"] = os.getloadavg()
    results["points"] = len(serial.points)
    results["failures"] = len(serial.failures) + len(parallel.failures)
    results["same_numbers"] = bool(a.index.equals(b.index) and (a["metric"] == b["metric"]).all())
    serial_point, cluster_point = a["compile_s"] + a["evaluate_s"], b["compile_s"] + b["evaluate_s"]
    results["serial_point_s_mean"] = float(serial_point.mean())
    results["cluster_point_s_mean"] = float(cluster_point.mean())
    # Share of the workers' wall time spent inside points: what dask's scheduling and transfers leave, whatever
    # the machine's load (1.0: no overhead).
    results["cluster_busy_fraction"] = float(cluster_point.sum() / (args.workers * results["cluster_s"]))
    results["speedup"] = results["serial_s"] / results["cluster_s"]
    cold = results["cluster_start_s"] + results["cluster_warmup_s"] + results["cluster_s"]
    results["speedup_with_start"] = (results["serial_warmup_s"] + results["serial_s"]) / cold
    write_json_atomic(args.out, results)
    print(
        f"{results['points']} points, {args.workers} workers, "
        f"load {results['loadavg_before'][0]:.1f} -> {results['loadavg_after'][0]:.1f}\n"
        f"  serial            {results['serial_s']:8.1f} s  (+ {results['serial_warmup_s']:.1f} s warm-up; "
        f"{results['serial_point_s_mean']:.2f} s per point, {results['serial_cores_used']:.2f} cores used)\n"
        f"  cluster           {results['cluster_s']:8.1f} s  (+ {results['cluster_start_s']:.1f} s start, "
        f"{results['cluster_warmup_s']:.1f} s warm-up; {results['cluster_point_s_mean']:.2f} s per point, "
        f"workers busy {results['cluster_busy_fraction']:.0%} of the time, {results['cluster_cores_used']:.2f} cores "
        "used)\n"
        f"  speedup           {results['speedup']:8.2f} x  (with start and warm-up: "
        f"{results['speedup_with_start']:.2f} x)\n"
        f"  same numbers      {results['same_numbers']}\n"
        f"wrote {args.out}"
    )


if __name__ == "__main__":
    main()
