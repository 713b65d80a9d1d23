#!/usr/bin/env python
"""Output error from IR drop against tile size and wire resistance: the figure in docs/irdrop.md.

For each square tile size and wire resistance (r_wl = r_bl = r, ohms per segment) one tile holds a random
Gaussian weight matrix on a differential pair in [0, 25 uS] (per-column scaling, as crossbar maps it); the
relative error of the amplifier currents I+ - I- against the ideal V @ (G+ - G-) is averaged over random
inputs in [-v_read, v_read]. Writes docs/figures/irdrop_error.png and benchmarks/results/irdrop_error.json.

    python benchmarks/irdrop_error.py [--sizes 32 64 128 256 512] [--resistances 0.1 0.3 1 3 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import write_json_atomic

from crossbar import irdrop
from crossbar.config import MappingConfig
from crossbar.tiles import conductance_targets

ROOT = Path(__file__).resolve().parents[1]


def output_error(size: int, r: float, seed: int = 0, batch: int = 64) -> dict[str, float]:
    """Relative error of one differential tile's outputs; also the mean gain (<1: attenuation)."""
    rng = np.random.default_rng(seed)
    mapping = MappingConfig()
    weights = rng.standard_normal((size, size))
    g_plus, g_minus = conductance_targets(weights / np.abs(weights).max(axis=0), mapping)
    voltages = rng.uniform(-mapping.v_read, mapping.v_read, (batch, size))
    ideal = voltages @ (g_plus - g_minus)
    start = time.perf_counter()
    actual = voltages @ (irdrop.effective_conductance(g_plus, r, r) - irdrop.effective_conductance(g_minus, r, r))
    seconds = time.perf_counter() - start
    error = float(np.linalg.norm(actual - ideal) / np.linalg.norm(ideal))
    gain = float(np.sum(actual * ideal) / np.sum(ideal * ideal))
    after_gain = float(np.linalg.norm(actual / gain - ideal) / np.linalg.norm(ideal))
    return {
        "size": size,
        "r_ohm": r,
        "relative_error": error,
        "gain": gain,
        "relative_error_after_gain": after_gain,
        "seconds_two_arrays": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--resistances", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0, 10.0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "irdrop_error.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "irdrop_error.png")
    args = parser.parse_args()
    rows = []
    for r in args.resistances:
        for size in args.sizes:
            rows.append(output_error(size, r))
            print(
                f"r = {r:5.2f} ohm  tile {size:4d}x{size:<4d}  error {rows[-1]['relative_error']:.3e}  "
                f"gain {rows[-1]['gain']:.4f}  after gain {rows[-1]['relative_error_after_gain']:.3e}  "
                f"({rows[-1]['seconds_two_arrays']:.2f} s)",
                flush=True,
            )
    write_json_atomic(args.out, {"results": rows})

    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, title in (
        (axes[0], "relative_error", "raw"),
        (axes[1], "relative_error_after_gain", "after one gain per tile (what drift compensation removes)"),
    ):
        for r in args.resistances:
            points = [row for row in rows if row["r_ohm"] == r]
            ax.loglog([p["size"] for p in points], [p[key] for p in points], "o-", label=f"{r:g} ohm")
        ax.set_xlabel("tile size (rows = cols)")
        ax.set_title(title, fontsize=10)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(args.sizes, [str(s) for s in args.sizes])
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("relative output error  ||I - I_ideal|| / ||I_ideal||")
    axes[0].legend(title="r_wl = r_bl per segment")
    fig.suptitle("IR drop of one differential tile: Gaussian weights, g_max 25 uS, inputs uniform in +-0.2 V")
    fig.tight_layout()
    tmp = args.figure.with_name(f".{args.figure.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(args.figure)
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
