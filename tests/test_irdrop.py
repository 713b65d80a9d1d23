"""IR drop: crossbar.irdrop against ngspice (the independent circuit reference) and closed forms."""

import os

import numpy as np
import pytest
import torch
from spice import NGSPICE, ngspice_currents
from torch import nn

import crossbar
from crossbar import irdrop

needs_ngspice = pytest.mark.skipif(
    NGSPICE is None and not os.environ.get("CI"), reason="ngspice not installed (CI installs it: .ci/run)"
)


def realistic(shape, seed, zeros=False):
    """Conductances of a programmed array: 0.1 to 25 uS, some cells at g_min = 0 when asked."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.1e-6, 25e-6, shape)
    if zeros:
        g[rng.random(shape) < 0.3] = 0.0
    return g


@needs_ngspice
@pytest.mark.parametrize(
    ("rows", "cols", "r_wl", "r_bl"),
    [
        (1, 1, 1.0, 1.0),
        (1, 9, 10.0, 0.1),
        (12, 1, 0.1, 10.0),
        (16, 16, 1.0, 1.0),
        (24, 40, 0.1, 0.1),
        (40, 24, 10.0, 10.0),
        (64, 48, 2.5, 0.5),
    ],
)
def test_matches_ngspice(tmp_path, rows, cols, r_wl, r_bl):
    assert NGSPICE is not None, "ngspice is required in CI"
    g = realistic((rows, cols), seed=rows * cols, zeros=rows == 64)
    rng = np.random.default_rng(rows + cols)
    voltages = np.concatenate([rng.uniform(0.0, 0.2, (2, rows)), rng.uniform(-0.2, 0.2, (1, rows))])
    spice = ngspice_currents(g, voltages, r_wl, r_bl, tmp_path)
    by_matrix = voltages @ irdrop.effective_conductance(g, r_wl, r_bl)
    by_nodal = irdrop.solve(g, voltages, r_wl, r_bl)
    scale = np.abs(spice).max(axis=1, keepdims=True)
    assert np.max(np.abs(by_matrix[:2] - spice[:2]) / np.abs(spice[:2])) < 1e-6  # positive inputs: elementwise
    assert np.max(np.abs(by_matrix - spice) / scale) < 1e-6
    assert np.max(np.abs(by_nodal - spice) / scale) < 1e-6
    ideal = voltages @ g
    assert np.max(np.abs(ideal - spice) / scale) > 1e-6 or rows * cols == 1, "the test must see some IR drop"


@pytest.mark.parametrize(("r_wl", "r_bl"), [(0.0, 0.0), (0.0, 2.0), (3.0, 0.0), (1.0, 1.0)])
def test_effective_matrix_equals_the_nodal_solve_and_zero_wires_are_ideal(r_wl, r_bl):
    g = realistic((33, 17), seed=5, zeros=True)
    voltages = np.random.default_rng(6).uniform(-0.2, 0.2, (8, 33))
    m = irdrop.effective_conductance(g, r_wl, r_bl)
    reference = irdrop.solve(g, voltages, r_wl, r_bl)
    np.testing.assert_allclose(voltages @ m, reference, rtol=1e-9, atol=1e-9 * np.abs(reference).max())
    if r_wl == r_bl == 0:
        np.testing.assert_array_equal(m, g)


def test_single_cell_closed_form():
    """One cell: the driver wire, the cell and the bit-line wire in series."""
    g, r_wl, r_bl = 20e-6, 3.0, 7.0
    m = irdrop.effective_conductance(np.array([[g]]), r_wl, r_bl)
    assert m[0, 0] == pytest.approx(1.0 / (r_wl + 1.0 / g + r_bl), rel=1e-12)


def test_uniform_word_line_closed_form():
    """Bit lines ideal, one word line of C equal cells: the ladder's input current and distribution."""
    cols, g, r = 50, 25e-6, 5.0
    m = irdrop.effective_conductance(np.full((1, cols), g), r, 0.0)
    # Independent ladder solve by hand: node voltages of a uniform RC ladder satisfy a 3-term recurrence.
    a = np.diag(np.full(cols, 2 / r + g)) - np.diag(np.full(cols - 1, 1 / r), 1) - np.diag(np.full(cols - 1, 1 / r), -1)
    a[-1, -1] -= 1 / r
    b = np.zeros(cols)
    b[0] = 1 / r
    np.testing.assert_allclose(m[0], g * np.linalg.solve(a, b), rtol=1e-12)
    assert np.all(np.diff(m[0]) < 0), "cells further from the driver see less voltage"


def test_more_wire_resistance_means_less_current():
    g = realistic((32, 32), seed=7)
    totals = [irdrop.effective_conductance(g, r, r).sum() for r in (0.0, 0.5, 2.0, 8.0)]
    assert totals[0] == pytest.approx(g.sum())
    assert all(a > b for a, b in zip(totals, totals[1:], strict=False))


@pytest.mark.parametrize(
    ("g", "r_wl", "r_bl", "message"),
    [
        (np.full((3, 3), 1e-6), -1.0, 1.0, "r_wl"),
        (np.full((3, 3), 1e-6), 1.0, float("nan"), "r_bl"),
        (np.full((3, 3), 1e-6), float("inf"), 1.0, "r_wl"),
        (np.full((3, 3), -1e-6), 1.0, 1.0, "non-negative"),
        (np.full((3, 3), np.nan), 1.0, 1.0, "finite"),
        (np.full(3, 1e-6), 1.0, 1.0, "shape"),
        (np.zeros((0, 3)), 1.0, 1.0, "shape"),
    ],
)
def test_bad_input_is_a_clear_error(g, r_wl, r_bl, message):
    with pytest.raises(ValueError, match=message):
        irdrop.effective_conductance(g, r_wl, r_bl)


def test_solve_checks_the_voltages():
    g = np.full((4, 3), 1e-6)
    with pytest.raises(ValueError, match=r"shape \(batch, 4\)"):
        irdrop.solve(g, np.zeros((2, 5)), 1.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        irdrop.solve(g, np.full((1, 4), np.nan), 1.0, 1.0)


def test_compiled_layer_computes_with_the_ir_drop_of_every_tile():
    """A compiled layer on an otherwise ideal chip equals the nodal solve of each of its arrays."""
    torch.manual_seed(0)
    n_in, n_out, tile = 70, 45, 32  # 3 x 2 tiles, partly used
    model = nn.Sequential(nn.Linear(n_in, n_out, bias=False))
    chip = crossbar.ChipConfig.preset("ideal").replace(
        tile={"rows": tile, "cols": tile}, wires={"r_wl": 2.0, "r_bl": 3.0}
    )
    x = torch.rand(5, n_in)
    with torch.no_grad():
        got = crossbar.compile(model, chip)(x).numpy()
    w = model[0].weight.detach().numpy().astype(np.float64).T  # (in, out)
    g_max = chip.mapping.g_max
    expected = np.zeros((5, n_out))
    for r0 in range(0, n_in, tile):
        for c0 in range(0, n_out, tile):
            block = w[r0 : r0 + tile, c0 : c0 + tile]
            scale = np.abs(block).max(axis=0)
            v = x.numpy()[:, r0 : r0 + tile].astype(np.float64)
            plus = irdrop.solve(np.maximum(block / scale, 0) * g_max, v, 2.0, 3.0)
            minus = irdrop.solve(np.maximum(-block / scale, 0) * g_max, v, 2.0, 3.0)
            expected[:, c0 : c0 + tile] += (plus - minus) / g_max * scale
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    ideal = x.numpy() @ w
    assert np.abs(ideal - expected).max() > 1e-3 * np.abs(ideal).max(), "the wires must matter here"
