"""The built-in demo: an MLP classifier of scikit-learn's handwritten digits, float vs on the chip.

The checkpoint ``models/checkpoints/demo_mlp.pt`` (about 200 KB) is trained by ``python -m models.demo --train``
(seeded, a few seconds); ``crossbar demo`` only evaluates it.
"""

from __future__ import annotations

import argparse
import io
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

import crossbar
from crossbar import progress as progress_bars
from crossbar.config import ChipConfig
from crossbar.fileio import write_torch_file
from models.data import digits_split

CHECKPOINT = "demo_mlp.pt"
HIDDEN = (300, 100)


def demo_model() -> nn.Sequential:
    """64 pixels -> 300 -> 100 -> 10 classes (layer 2 spans two 256-row tiles)."""
    return nn.Sequential(
        nn.Linear(64, HIDDEN[0]), nn.ReLU(), nn.Linear(HIDDEN[0], HIDDEN[1]), nn.ReLU(), nn.Linear(HIDDEN[1], 10)
    )


def train(epochs: int = 60, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    x_train, y_train, _, _ = digits_split()
    model = demo_model()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x_train), generator=generator).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            optimiser.step()
    return model


def load_model() -> nn.Sequential:
    model = demo_model()
    data = resources.files("models.checkpoints").joinpath(CHECKPOINT).read_bytes()
    model.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


@dataclass
class DemoResult:
    float_accuracy: float
    ideal_accuracy: float
    chip_accuracies: list[float]
    seconds: float
    energy: crossbar.EnergyReport | None  # None for a chip without DAC/ADC resolution (ideal)
    test_size: int  # held-out digits every accuracy is measured on


def chip_accuracies(
    model: nn.Module, chip: ChipConfig | str, instances: int, x: torch.Tensor, y: torch.Tensor, progress: bool | None
) -> list[float]:
    """Accuracy of ``model`` on ``instances`` chip instances (seeds 0..instances-1) of ``chip``; ``progress``:
    a bar over the instances (``crossbar.progress``)."""
    seeds = progress_bars.bar(range(instances), desc="chip instances", unit="instance", progress=progress)
    return [accuracy(crossbar.compile(model, chip, seed=s, progress=False), x, y) for s in seeds]


def run(
    chip: ChipConfig | None = None, instances: int = 5, progress: bool | None = None
) -> tuple[DemoResult, crossbar.MappingReport]:
    """Float vs ideal tiles vs ``chip`` (default preset) accuracy on the held-out digits, and the energy per
    inference on ``chip``. ``progress``: a bar over the chip instances (``crossbar.progress``)."""
    start = time.perf_counter()
    chip = chip or ChipConfig.preset("default")
    model = load_model()
    _, _, x_test, y_test = digits_split()
    ideal = accuracy(crossbar.compile(model, "ideal", progress=False), x_test, y_test)
    chip_acc = chip_accuracies(model, chip, instances, x_test, y_test, progress)
    compiled = crossbar.compile(model, chip, progress=progress)
    mapping = crossbar.report(compiled)
    has_converters = chip.dac.bits is not None and chip.adc.bits is not None
    energy = crossbar.estimate(compiled, x_test, progress=progress) if has_converters else None  # per digit
    seconds = time.perf_counter() - start
    result = DemoResult(accuracy(model, x_test, y_test), ideal, chip_acc, seconds, energy, len(y_test))
    return result, mapping


def standard_error(accuracy: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` independent examples: sqrt(p (1 - p) / n)."""
    return float(np.sqrt(accuracy * (1.0 - accuracy) / n))


def format_result(result: DemoResult, chip_name: str) -> str:
    """Accuracies with their uncertainties, and what those mean for comparing them."""
    acc, n = np.array(result.chip_accuracies), result.test_size
    spread = f"+- {acc.std():.2%} std over {len(acc)} instances" if len(acc) > 1 else "(one instance: no spread)"
    return (
        f"held-out digits accuracy ({n} digits, {len(acc)} chip instances):\n"
        f"  float            {result.float_accuracy:.2%} +- {standard_error(result.float_accuracy, n):.2%} "
        f"sampling error of {n} digits\n"
        f"  ideal tiles      {result.ideal_accuracy:.2%}\n"
        f"  chip {chip_name:<11} {acc.mean():.2%} {spread} (min {acc.min():.2%}, max {acc.max():.2%})\n"
        f"  One digit is {1 / n:.2%}. The chip's +- is the spread over chip instances (programming error, drift\n"
        f"  and read noise differ from one to the next); the float's is the sampling error of a finite test set\n"
        f"  (another {n} digits would score differently). A difference within these, such as a chip mean above\n"
        f"  float, is noise: a few borderline digits flipping either way, not the chip beating float.\n"
        f"  ({result.seconds:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", action="store_true", help="train and write the shipped checkpoint")
    args = parser.parse_args()
    if args.train:
        model = train()
        _, _, x_test, y_test = digits_split()
        path = Path(__file__).parent / "checkpoints" / CHECKPOINT
        write_torch_file(model.state_dict(), path)
        print(f"wrote {path}: held-out accuracy {accuracy(model, x_test, y_test):.2%}")


if __name__ == "__main__":
    main()
