#!/usr/bin/env python
"""Speed of the IR-drop model: building M, the steady-state MVM with IR drop, and a sparse direct baseline.

In one run, with the same thread settings for all (numpy/scipy BLAS, torch, numba):
  build_M        crossbar.irdrop.effective_conductance for 256x256 (and 512x512, 1024x1024) tiles
  mvm_ideal      float32 V @ G for a 256x256 tile and a batch of 64 (what an ideal MVM costs)
  mvm_irdrop     float32 V @ M, the same product with the precomputed effective matrix
  layer_ideal    the forward of a compiled 256x256 layer (crossbar default chip) with ideal wires
  layer_irdrop   the same layer with 1 ohm wires (IR drop folded into the programmed tiles)
  sparse_solve   crossbar.irdrop.solve: assemble and factor the full nodal system (2 R C unknowns,
                 SuperLU) and solve for the batch, as a simulator that solves the circuit per MVM must
  sparse_cached  the triangular solves alone with the factorization cached (the most a per-MVM solver saves)
Targets: M for 256x256 under 0.5 s; the IR-drop MVM within 1.5x of the ideal one.

    python benchmarks/bench_irdrop.py [--threads N] [--sizes 256 512 1024] [--out benchmarks/results/irdrop.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import available_cores, configure_threads, machine_info, timed, write_json_atomic

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "irdrop.json"
R_WIRE = 1.0  # ohms per segment, the default preset's value
BATCH = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="tile sizes for building M")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threading = configure_threads(args.threads, "default")

    import numpy as np
    import scipy.sparse.linalg
    import torch
    from torch import nn

    import crossbar
    from crossbar import irdrop

    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"machine": machine_info(threading), "r_wire_ohm": R_WIRE, "batch": BATCH}

    build = {}
    for size in sorted(set(args.sizes) | {256}):  # 256 x 256 is the target case
        g = rng.uniform(0.1e-6, 25e-6, (size, size))
        reps = 5 if size <= 256 else 1
        build[str(size)] = timed(lambda g=g: irdrop.effective_conductance(g, R_WIRE, R_WIRE), reps)
        print(f"build M {size}x{size}: {build[str(size)]['median_s']:.3f} s", flush=True)
    results["build_M"] = build

    size = 256
    g = rng.uniform(0.1e-6, 25e-6, (size, size))
    volts = rng.uniform(-0.2, 0.2, (BATCH, size))
    m = irdrop.effective_conductance(g, R_WIRE, R_WIRE)
    v32, g32, m32 = (torch.from_numpy(a.astype(np.float32)) for a in (volts, g, m))
    y, b, s, _ = irdrop.nodal_system(g, R_WIRE, R_WIRE)
    lu = scipy.sparse.linalg.splu(y)
    rhs = np.asarray(b @ volts.T)

    linear = nn.Linear(size, size)
    chip = crossbar.ChipConfig.preset("default").replace(read_noise={"output_std": 0.0})
    layer_ideal = crossbar.compile(nn.Sequential(linear), chip.replace(wires={"r_wl": 0.0, "r_bl": 0.0}))
    layer_irdrop = crossbar.compile(nn.Sequential(linear), chip.replace(wires={"r_wl": R_WIRE, "r_bl": R_WIRE}))
    x = torch.randn(BATCH, size)

    calls: dict[str, Callable[[], Any]] = {
        "mvm_ideal": lambda: torch.mm(v32, g32),
        "mvm_irdrop": lambda: torch.mm(v32, m32),
        "layer_ideal": lambda: layer_ideal(x),
        "layer_irdrop": lambda: layer_irdrop(x),
        "sparse_solve": lambda: irdrop.solve(g, volts, R_WIRE, R_WIRE),
        "sparse_cached": lambda: s @ lu.solve(rhs),
    }
    times: dict[str, dict[str, float]] = {name: {"samples": []} for name in calls}
    with torch.no_grad():
        for fn in calls.values():  # warm-up
            fn()
        rounds = 7
        for _ in range(rounds):  # interleaved so machine noise affects all alike
            for name, fn in calls.items():
                inner = 1 if name.startswith("sparse") else 200
                start = time.perf_counter()
                for _ in range(inner):
                    fn()
                times[name]["samples"].append((time.perf_counter() - start) / inner)
    for entry in times.values():
        entry["median_s"] = statistics.median(entry["samples"])
    results["mvm_256_batch64"] = times
    exact = np.max(np.abs(volts @ m - irdrop.solve(g, volts, R_WIRE, R_WIRE)))
    results["max_abs_difference_M_vs_sparse_A"] = float(exact)

    med = {name: entry["median_s"] for name, entry in times.items()}
    ratios = {
        "mvm_irdrop / mvm_ideal": med["mvm_irdrop"] / med["mvm_ideal"],
        "layer_irdrop / layer_ideal": med["layer_irdrop"] / med["layer_ideal"],
        "sparse_solve / mvm_irdrop": med["sparse_solve"] / med["mvm_irdrop"],
        "sparse_cached / mvm_irdrop": med["sparse_cached"] / med["mvm_irdrop"],
        "sparse_solve / build_M(256)": med["sparse_solve"] / build["256"]["median_s"],
    }
    results["ratios"] = ratios
    targets = {
        "M 256x256 under 0.5 s": build["256"]["median_s"] < 0.5,
        "IR-drop MVM within 1.5x of ideal (raw product)": ratios["mvm_irdrop / mvm_ideal"] <= 1.5,
        "IR-drop layer within 1.5x of ideal-wire layer": ratios["layer_irdrop / layer_ideal"] <= 1.5,
    }
    results["targets"] = targets

    print(f"\n256x256 tile, batch {BATCH}, {args.threads} threads (median of {rounds}):")
    for name, value in med.items():
        print(f"  {name:<14s} {value * 1e3:10.3f} ms")
    for name, value in ratios.items():
        print(f"  {name:<30s} {value:10.2f}x")
    print(f"  max |V@M - sparse solve| = {exact:.2e} A")
    for name, ok in targets.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
