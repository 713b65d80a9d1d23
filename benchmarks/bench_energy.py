#!/usr/bin/env python
"""Cost of crossbar.estimate against a plain forward pass of the same compiled model, in one run.

estimate() runs one forward pass with counting hooks (the DAC codes are converted a second time to count
them, and the other modules are priced from their shapes), so its cost is that forward plus the counting.
Cases: the demo digits MLP (64-300-100-10) at batch 540 and one nn.Linear(1024, 1024) at batch 64, both on
the default chip with ideal wires (wires change programming time, not the forward). Each round times the
forward and the estimate back to back; reported: per-round paired ratio (median over rounds) and medians.

    python benchmarks/bench_energy.py [--threads N] [--rounds 15] [--out benchmarks/results/energy.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import available_cores, configure_threads, machine_info, write_json_atomic

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "energy.json"


def paired(forward, estimate, rounds: int) -> dict[str, float]:  # noqa: ANN001 (two zero-argument callables)
    """Seconds of each callable per round (one warm-up call each first) and the median paired ratio."""
    forward(), estimate()
    f_s, e_s = [], []
    for _ in range(rounds):
        for fn, out in ((forward, f_s), (estimate, e_s)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    ratios = [e / f for e, f in zip(e_s, f_s, strict=True)]
    return {
        "forward_median_s": statistics.median(f_s),
        "estimate_median_s": statistics.median(e_s),
        "ratio_median_paired": statistics.median(ratios),
        "ratio_min": min(ratios),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threading = configure_threads(args.threads, "default")

    import torch
    from torch import nn

    import crossbar
    from models import demo
    from models.data import digits_split

    chip = crossbar.ChipConfig.preset("default").replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(1024, 1024)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(1024, 1024, generator=generator) * 2 - 1)
        layer.bias.zero_()
    cases = {
        "demo_mlp_batch540": (demo.load_model(), digits_split()[2]),
        "linear1024_batch64": (nn.Sequential(layer), torch.rand(64, 1024, generator=generator) * 2 - 1),
    }
    results = {}
    for name, (model, x) in cases.items():
        analog = crossbar.compile(model, chip, seed=0)

        def forward(analog=analog, x=x) -> None:
            with torch.no_grad():
                analog(x)

        result = paired(forward, lambda analog=analog, x=x: crossbar.estimate(analog, x), args.rounds)
        results[name] = result
        print(
            f"{name:<20} forward {result['forward_median_s'] * 1e3:8.2f} ms   estimate "
            f"{result['estimate_median_s'] * 1e3:8.2f} ms   estimate / forward {result['ratio_median_paired']:.2f}"
        )
    write_json_atomic(args.out, {"machine": machine_info(threading), "cases": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
