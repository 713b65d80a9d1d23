#!/usr/bin/env python
"""Evaluation time of each Mamba / Mamba-2 char-LM on the default chip against its float evaluation.

One run, same threads for both: for every model in models.pretrained.SPECS (trained weights where shipped,
else a seeded initialisation: the work per forward does not depend on the weights), the float model and
``crossbar.compile(model, "default", seed=0)`` (compiled once, programming timed apart) each evaluate the same
batch under ``torch.no_grad()``: 16 held-out windows of 128 characters. Contenders alternate within each
round; the minimum over rounds is kept. Target: chip / float within 3x.

    python benchmarks/bench_mamba.py [--threads 2] [--reps 5] [--out benchmarks/results/mamba_speed.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from common import configure_threads, machine_info, write_json_atomic

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "mamba_speed.json"
TARGET_RATIO = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threading = configure_threads(args.threads, "default")
    import torch

    import crossbar
    from models import lm_eval, pretrained
    from models.data import tiny_shakespeare

    inputs, _ = lm_eval.windows(tiny_shakespeare().valid, 128, max_chars=16 * 128)
    results: dict[str, Any] = {"machine": machine_info(threading), "target_ratio": TARGET_RATIO, "models": {}}
    for name in pretrained.SPECS:
        torch.manual_seed(0)
        shipped = name in pretrained.SHIPPED
        model = pretrained.load(name) if shipped else pretrained.build(name).eval()
        start = time.perf_counter()
        chip = crossbar.compile(model, "default", seed=0)
        compile_s = time.perf_counter() - start
        samples: dict[str, list[float]] = {"float": [], "chip": []}
        with torch.no_grad():
            model(inputs), chip(inputs)  # warm-up (numba JIT, buffers)
            for round_ in range(args.reps):
                order = [("float", model), ("chip", chip)]
                for label, module in order if round_ % 2 == 0 else order[::-1]:
                    start = time.perf_counter()
                    module(inputs)
                    samples[label].append(time.perf_counter() - start)
        float_s, chip_s = min(samples["float"]), min(samples["chip"])
        ratio = chip_s / float_s
        results["models"][name] = {
            "trained_weights": shipped,
            "input_shape": list(inputs.shape),
            "float_s": float_s,
            "chip_s": chip_s,
            "ratio": ratio,
            "compile_s": compile_s,
            "samples": samples,
            "pass": ratio <= TARGET_RATIO,
        }
        verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
        print(
            f"{name:<14} float {float_s * 1e3:8.1f} ms  chip {chip_s * 1e3:8.1f} ms  ratio {ratio:5.2f}  "
            f"(target <= {TARGET_RATIO}) {verdict}   compile {compile_s:.1f} s",
            flush=True,
        )
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
