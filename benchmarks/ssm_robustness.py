#!/usr/bin/env python
"""PTD robustness in our setting: accuracy as a Fourier mode is added to every SSM layer's input.

For S4D vs S4-PTD and S5 vs S5-PTD (the shipped checkpoints), at inference every mixer's input gets
``amplitude * cos(2 pi f k / 64)`` (``models.evaluate.fourier_mode``), for several frequencies f (cycles per
sequence) and growing amplitudes, in float and on ``--instances`` instances of the default chip. Writes JSON
and the figure docs/figures/ssm_robustness.png; prints a Markdown table.

    python benchmarks/ssm_robustness.py [--instances 2] [--out benchmarks/results/ssm_robustness.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import configure_threads, machine_info, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "ssm_robustness.json"
FIGURE = ROOT / "docs" / "figures" / "ssm_robustness.png"
MODELS = ("s4d", "s4-ptd", "s5", "s5-ptd")
FREQUENCIES = (1.0, 8.0, 31.0)
AMPLITUDES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FREQUENCIES), figsize=(4.2 * len(FREQUENCIES), 3.6), sharey=True)
    colours = {"s4d": "tab:blue", "s4-ptd": "tab:orange", "s5": "tab:green", "s5-ptd": "tab:red"}
    for ax, freq in zip(axes, FREQUENCIES, strict=True):
        for name in MODELS:
            curve = results[name][str(freq)]
            ax.plot(AMPLITUDES, curve["float"], "-o", color=colours[name], label=f"{name} float", ms=3)
            ax.plot(AMPLITUDES, curve["chip_mean"], "--", color=colours[name], label=f"{name} chip", lw=1)
        ax.set_title(f"Fourier mode f = {freq:g} cycles / 64 steps")
        ax.set_xlabel("amplitude (LayerNorm units)")
        ax.set_xscale("symlog", linthresh=0.25)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy")
    axes[-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args()
    threading = configure_threads(args.threads, "default")

    import numpy as np

    import crossbar
    from models.data import sequential_digits
    from models.demo import accuracy
    from models.evaluate import fourier_mode
    from models.ssm_digits import load

    _, _, x_test, y_test = sequential_digits()
    results: dict = {}
    for name in MODELS:
        model = load(name)
        chips = [crossbar.compile(model, "default", seed=s) for s in range(args.instances)]
        results[name] = {}
        for freq in FREQUENCIES:
            curve: dict = {"float": [], "chip": []}
            for amp in AMPLITUDES:
                with fourier_mode(model, amp, freq):
                    curve["float"].append(accuracy(model, x_test, y_test))
                chip = []
                for compiled in chips:
                    with fourier_mode(compiled, amp, freq):
                        chip.append(accuracy(compiled, x_test, y_test))
                curve["chip"].append(chip)
            curve["chip_mean"] = [float(np.mean(c)) for c in curve["chip"]]
            results[name][str(freq)] = curve
            print(
                f"{name} f={freq:g}: float {np.round(curve['float'], 3)} chip {np.round(curve['chip_mean'], 3)}",
                flush=True,
            )
    print("\n| f | model | " + " | ".join(f"a={a:g}" for a in AMPLITUDES) + " |")
    print("|---|---|" + "---|" * len(AMPLITUDES))
    for freq in FREQUENCIES:
        for name in MODELS:
            curve = results[name][str(freq)]
            cells = [f"{f:.1%} / {c:.1%}" for f, c in zip(curve["float"], curve["chip_mean"], strict=True)]
            print(f"| {freq:g} | {name} | " + " | ".join(cells) + " |")
    plot(results, args.figure)
    write_json_atomic(
        args.out,
        {
            "frequencies": FREQUENCIES,
            "amplitudes": AMPLITUDES,
            "chip": "default",
            "instances": args.instances,
            "results": results,
            "machine": machine_info(threading),
        },
    )
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
