#!/usr/bin/env python
"""Evaluation time of each shipped SSM on the default chip against its float evaluation, in one run.

For every model: the held-out digits (540 sequences of 64 steps) in one batch under ``torch.no_grad()``, float
model vs ``crossbar.compile(model, "default", seed=0)`` (programming time reported apart, never counted).
The two are interleaved within each round after an untimed warm-up call; the ratio is the median over rounds
of chip time / float time within a round. Target: at most 3x.

    python benchmarks/bench_ssm.py [--rounds 5] [--threads 1] [--out benchmarks/results/ssm_speed.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import configure_threads, machine_info, write_json_atomic

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ssm_speed.json"
TARGET = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threading = configure_threads(args.threads, "default")

    import torch

    import crossbar
    from models.data import sequential_digits
    from models.ssm_digits import MODELS, variants

    _, _, x_test, _ = sequential_digits()

    def timed(model: torch.nn.Module) -> float:
        with torch.no_grad():
            start = time.perf_counter()
            model(x_test)
            return time.perf_counter() - start

    rows = []
    for name in MODELS:
        for label, variant in variants(name):
            start = time.perf_counter()
            chip = crossbar.compile(variant, "default", seed=0)
            programming = time.perf_counter() - start
            timed(variant), timed(chip)  # warm-up: numba JIT, buffers
            floats, chips = [], []
            for _ in range(args.rounds):
                floats.append(timed(variant))
                chips.append(timed(chip))
            ratio = statistics.median(c / f for c, f in zip(chips, floats, strict=True))
            rows.append(
                {
                    "model": label,
                    "float_s": statistics.median(floats),
                    "chip_s": statistics.median(chips),
                    "ratio": ratio,
                    "programming_s": programming,
                    "within_target": ratio <= TARGET,
                }
            )
            verdict = "PASS" if ratio <= TARGET else "FAIL"
            row = rows[-1]
            print(
                f"{label:<24} float {row['float_s'] * 1e3:7.1f} ms  chip {row['chip_s'] * 1e3:7.1f} ms"
                f"  ratio {ratio:4.2f}  (target <= {TARGET:g}x: {verdict}; programming {programming:.2f} s)",
                flush=True,
            )
    write_json_atomic(
        args.out,
        {
            "batch": len(x_test),
            "length": 64,
            "rounds": args.rounds,
            "target_ratio": TARGET,
            "rows": rows,
            "machine": machine_info(threading),
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
