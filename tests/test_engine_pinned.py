"""The engine's outputs pinned to arrays computed by the engine before its speed work (tests/data/engine_outputs.npz:
the forward pass of main at 2386ed4, before issue 14's engine, on the programming this branch shares; main's
programming by parts had changed the chip instance of a seed, so the arrays first stored at 09b0021 were
recomputed with the old engine on the new programming).

One nn.Linear(300, 70) on the default chip (ideal wires), with and without per-cell read noise, run at
batch 1, 7 and 150 (the first three forwards after compiling, so the per-call noise keys are pinned too), on
one and on two threads. Every output must equal the stored one bit for bit, except where the rounding of a
tile product (which depends on how the BLAS cuts it) moves a tile output across an ADC decision level, or
the rounding of the per-cell variance product moves the noise by a few float32 ulps: the rule stated in
``crossbar.engine`` (at most one ADC step, in a handful of outputs).

Regenerate (only for a deliberate change of the numbers), with the reference engine's checkout on the path:
``PYTHONPATH=<checkout> python tests/test_engine_pinned.py``.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import crossbar

STORED = Path(__file__).parent / "data" / "engine_outputs.npz"
BATCHES = (1, 7, 150)
CELL_STDS = (0.0, 0.03)


def _layer_and_inputs() -> tuple[nn.Linear, dict[int, torch.Tensor]]:
    rng = np.random.default_rng(2024)
    layer = nn.Linear(300, 70)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(rng.uniform(-0.06, 0.06, (70, 300)).astype(np.float32)))
        layer.bias.copy_(torch.from_numpy(rng.uniform(-0.05, 0.05, 70).astype(np.float32)))
    inputs = {batch: torch.from_numpy(rng.standard_normal((batch, 300)).astype(np.float32)) for batch in BATCHES}
    return layer, inputs


def _outputs(cell_std: float, threads: int) -> tuple[dict[int, np.ndarray], float]:
    """The outputs of the first three forwards and the largest ADC step (output units) of the batches."""
    layer, inputs = _layer_and_inputs()
    chip = crossbar.ChipConfig.preset("default").replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    chip = chip.replace(read_noise={"cell_std": cell_std})
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        compiled = crossbar.compile(nn.Sequential(layer), chip, seed=11)
        with torch.no_grad():
            outputs = {batch: compiled(x).numpy() for batch, x in inputs.items()}
    finally:
        torch.set_num_threads(before)
    tile = compiled[0].tile
    scale = max(float(np.abs(tile.quantize_inputs(x.numpy())[1]).max()) for x in inputs.values())
    return outputs, float(tile.record.from_code.max()) * scale


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell_std", CELL_STDS)
def test_outputs_match_the_stored_ones(cell_std, threads):
    stored = np.load(STORED)
    outputs, adc_step = _outputs(cell_std, threads)
    for batch, y in outputs.items():
        expected = stored[f"cell{cell_std}_batch{batch}"]
        assert y.shape == expected.shape and y.dtype == np.float32
        moved = np.abs(y - expected)
        flipped = moved > 1e-5 * np.abs(expected).max()  # beyond the rounding of the per-cell variance product
        assert np.sum(flipped) <= max(2, 1e-2 * y.size), f"batch {batch}: too many outputs moved"
        assert moved.max() <= 1.01 * adc_step, f"batch {batch}: an output moved by more than one ADC step"


def test_stored_outputs_are_the_noisy_layer():
    """The stored arrays are the layer (x @ W.T + b within the hardware's noise), not another one."""
    stored = np.load(STORED)
    layer, inputs = _layer_and_inputs()
    for cell_std in CELL_STDS:
        for batch, x in inputs.items():
            expected = layer(x).detach().numpy()
            got = stored[f"cell{cell_std}_batch{batch}"]
            relative = np.linalg.norm(got - expected) / np.linalg.norm(expected)
            assert 0 < relative < 0.3


if __name__ == "__main__":
    STORED.parent.mkdir(exist_ok=True)
    arrays = {}
    for cell_std in CELL_STDS:
        outputs, _ = _outputs(cell_std, 1)
        arrays.update({f"cell{cell_std}_batch{batch}": y for batch, y in outputs.items()})
    np.savez_compressed(STORED, **arrays)
    print(f"wrote {STORED}")
