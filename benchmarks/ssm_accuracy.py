#!/usr/bin/env python
"""Held-out sequential-digits accuracy of every shipped SSM: float vs ideal tiles vs the default chip.

Each model is compiled onto ``--instances`` chip instances (seeds 0..n-1) of ``--chip``; S5 models also with
their B and C on tiles (``models.s5.bc_as_linear``). Prints a Markdown table, writes JSON.

    python benchmarks/ssm_accuracy.py [--instances 5] [--chip default] [--out benchmarks/results/ssm_accuracy.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import configure_threads, machine_info, write_json_atomic

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ssm_accuracy.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--chip", default="default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threading = configure_threads(args.threads, "default")

    import numpy as np

    from models.data import sequential_digits
    from models.demo import accuracy
    from models.evaluate import chip_accuracies
    from models.ssm_digits import MODELS, variants

    _, _, x_test, y_test = sequential_digits()
    rows = []
    print(f"| model | float | ideal tiles | chip {args.chip} (mean +- std, min, {args.instances} instances) |")
    print("|---|---|---|---|")
    for name in MODELS:
        for label, variant in variants(name):
            start = time.perf_counter()
            ideal, chip = chip_accuracies(variant, args.chip, args.instances, x_test, y_test)
            acc = np.array(chip)
            row = {
                "model": label,
                "float": accuracy(variant, x_test, y_test),
                "ideal": ideal,
                "chip": chip,
                "chip_mean": float(acc.mean()),
                "chip_std": float(acc.std()),
                "seconds": time.perf_counter() - start,
            }
            rows.append(row)
            print(
                f"| {label} | {row['float']:.2%} | {ideal:.2%} | "
                f"{acc.mean():.2%} +- {acc.std():.2%} (min {acc.min():.2%}) |",
                flush=True,
            )
    write_json_atomic(
        args.out,
        {
            "chip": args.chip,
            "instances": args.instances,
            "test_samples": len(y_test),
            "rows": rows,
            "machine": machine_info(threading),
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
