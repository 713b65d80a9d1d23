"""Per-forward read noise: the output-referred models against explicit per-cell Monte Carlo."""

import numpy as np
import torch
from torch import nn

import crossbar
from crossbar import ChipConfig


def test_exact_cell_mode_matches_per_cell_monte_carlo():
    """Output variance of the referred model vs drawing a fresh noisy conductance for every cell and read."""
    torch.manual_seed(0)
    n_in, n_out, cell_std = 300, 20, 0.05
    model = nn.Sequential(nn.Linear(n_in, n_out, bias=False))
    chip = ChipConfig.preset("ideal").replace(read_noise={"cell_std": cell_std}, tile={"rows": 128, "cols": 16})
    compiled = crossbar.compile(model, chip)
    x = torch.randn(4, n_in)
    with torch.no_grad():
        draws = torch.stack([compiled(x) for _ in range(4000)]).numpy()
    # Independent reference: G+ and G- of every cell fluctuate with std cell_std * G; explicit per-cell noise.
    g_max = chip.mapping.g_max
    w = model[0].weight.detach().numpy().T  # (in, out)
    tile = compiled[0].tile
    scale = np.zeros_like(w)
    for r in range(tile.grid.row_blocks):
        rows = tile.grid.row_slice(r)
        scale[rows] = tile.digital_scale[r]
    g_pos, g_neg = np.maximum(w / scale, 0) * g_max, np.maximum(-w / scale, 0) * g_max
    rng = np.random.default_rng(1)
    xn = x.numpy().astype(np.float64)
    mc = []
    for _ in range(2000):
        noisy = g_pos * (1 + cell_std * rng.standard_normal(w.shape)) - g_neg * (
            1 + cell_std * rng.standard_normal(w.shape)
        )
        mc.append(xn @ (noisy / g_max * scale))
    mc = np.array(mc)
    np.testing.assert_allclose(draws.mean(axis=0), mc.mean(axis=0), atol=4 * mc.std(axis=0).max() / np.sqrt(2000))
    ratio = draws.var(axis=0) / mc.var(axis=0)
    assert np.all(np.abs(ratio - 1) < 0.15), ratio


def test_output_noise_has_the_documented_std():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(600, 10, bias=False))
    chip = ChipConfig.preset("ideal").replace(read_noise={"output_std": 0.04})
    compiled = crossbar.compile(model, chip)
    x = torch.randn(3, 600)
    with torch.no_grad():
        draws = torch.stack([compiled(x) for _ in range(3000)]).numpy()
    tile = compiled[0].tile
    blocks = [x[:, tile.grid.row_slice(r)] for r in range(tile.grid.row_blocks)]
    input_scale = np.stack([b.abs().amax(dim=1).numpy() for b in blocks], axis=1)  # (B, R), per-tile DAC
    d = tile.digital_scale.astype(np.float64)  # (R, out)
    expected = 0.04 * np.sqrt(((input_scale[:, :, None] * d[None]) ** 2).sum(axis=1))
    np.testing.assert_allclose(draws.std(axis=0), expected, rtol=0.08)
    with torch.no_grad():
        np.testing.assert_allclose(draws.mean(axis=0), model(x).numpy(), atol=4 * expected.max() / np.sqrt(3000))
