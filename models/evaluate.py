"""Evaluate the shipped sequential-digits models: float, ideal tiles, the default chip, and under a Fourier-mode
perturbation of every SSM layer's input.

    python -m models.evaluate --model s4d [--chip default] [--instances 5]

``fourier_mode(model, amplitude, frequency)`` is the PTD paper's robustness test (Yu et al., ICLR 2024,
Sec. 5.2) in our setting: at inference, every mixer's input u (B, L, H) becomes
u + amplitude * cos(2 pi frequency k / L), k = 0..L-1, the same on every channel. Mixer inputs come out of a
LayerNorm (per-step unit variance), so the amplitude is relative to the signal.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

import crossbar
from models.data import sequential_digits
from models.demo import accuracy, standard_error
from models.demo import chip_accuracies as instance_accuracies
from models.ssm_digits import MODELS, load


def mixers(model: nn.Module) -> list[nn.Module]:
    """The SSM layers of a backbone model (its blocks' mixers)."""
    return [block.mixer for block in model.blocks]


@contextlib.contextmanager
def fourier_mode(model: nn.Module, amplitude: float, frequency: float) -> Iterator[None]:
    """Within the block, add amplitude * cos(2 pi frequency k / L) to every mixer's input (forward pre-hook)."""
    if not math.isfinite(amplitude) or not math.isfinite(frequency):
        raise ValueError(f"amplitude and frequency must be finite (got {amplitude}, {frequency})")

    def hook(module: nn.Module, args: tuple) -> tuple:
        u = args[0]
        steps = torch.arange(u.shape[1], dtype=u.dtype)
        wave = amplitude * torch.cos(2 * math.pi * frequency * steps / u.shape[1])
        return (u + wave[:, None], *args[1:])

    handles = [mixer.register_forward_pre_hook(hook) for mixer in mixers(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def chip_accuracies(
    model: nn.Module, chip: str, instances: int, x: torch.Tensor, y: torch.Tensor, progress: bool | None = None
) -> tuple[float, list[float]]:
    """Accuracy with ideal tiles, and on ``instances`` chip instances (seeds 0..instances-1) of ``chip``;
    ``progress``: a bar over the instances (``crossbar.progress``)."""
    ideal = accuracy(crossbar.compile(model, "ideal", progress=False), x, y)
    return ideal, instance_accuracies(model, chip, instances, x, y, progress)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(MODELS), action="append", help="default: every shipped model")
    parser.add_argument("--chip", default="default", help="preset name or chip JSON (default: %(default)s)")
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    progress = False if args.quiet else None
    _, _, x_test, y_test = sequential_digits()
    for name in args.model or list(MODELS):
        model = load(name)
        ideal, chip = chip_accuracies(model, args.chip, args.instances, x_test, y_test, progress)
        acc, float_acc = np.array(chip), accuracy(model, x_test, y_test)
        print(
            f"{name:<7} float {float_acc:.2%} +- {standard_error(float_acc, len(y_test)):.2%} (sampling error)  "
            f"ideal {ideal:.2%}  chip {args.chip} {acc.mean():.2%} +- {acc.std():.2%} "
            f"(std over {len(acc)} instances, min {acc.min():.2%})"
        )


if __name__ == "__main__":
    main()
