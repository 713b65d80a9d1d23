"""crossbar.compile: ideal tiles equal float layers, seeds, gradients, digital tiles, calibration."""

import numpy as np
import pytest
import torch
from torch import nn

import crossbar
from crossbar import ChipConfig, ConfigError, TiledConv1d, TiledLinear


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(
    ("n_in", "n_out", "tile"),
    [(1, 1, 256), (7, 300, 256), (256, 256, 256), (257, 255, 256), (1000, 513, 256), (100, 37, 16), (33, 64, 5)],
)
def test_ideal_chip_equals_float_for_any_shape(n_in, n_out, tile):
    torch.manual_seed(n_in)
    model = nn.Sequential(nn.Linear(n_in, n_out))
    chip = ChipConfig.preset("ideal").replace(tile={"rows": tile, "cols": tile})
    x = torch.randn(19, n_in)
    with torch.no_grad():
        assert rel_err(crossbar.compile(model, chip)(x), model(x)) < 1e-5


def test_ideal_chip_handles_conv1x1_nested_modules_and_leading_dims():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(12, 20, kernel_size=1)
            self.wide = nn.Conv1d(20, 20, kernel_size=3, padding=1)
            self.head = nn.Sequential(nn.GELU(), nn.Linear(20, 5, bias=False))

        def forward(self, x):
            h = self.wide(self.conv(x)).transpose(1, 2)  # (B, L, C)
            return self.head(h)

    model = Net()
    x = torch.randn(3, 12, 9)
    compiled = crossbar.compile(model, "ideal")
    assert isinstance(compiled.conv, TiledConv1d) and isinstance(compiled.head[1], TiledLinear)
    assert isinstance(compiled.wide, TiledConv1d)
    with torch.no_grad():
        assert rel_err(compiled(x), model(x)) < 1e-5
    assert isinstance(model.conv, nn.Conv1d), "the float model must be untouched"


def test_same_seed_same_outputs_different_seed_different_instance():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(300, 200), nn.ReLU(), nn.Linear(200, 10))
    x = torch.randn(32, 300)
    with torch.no_grad():
        a1, a2, b = (crossbar.compile(model, "default", seed=s)(x) for s in (5, 5, 6))
    assert torch.equal(a1, a2)
    assert not torch.allclose(a1, b)
    w1 = crossbar.compile(model, "default", seed=5)[0].tile.weights
    w2 = crossbar.compile(model, "default", seed=6)[0].tile.weights
    assert not np.array_equal(w1, w2), "a different seed must program a different chip instance"
    state = torch.get_rng_state()
    crossbar.compile(model, "default", seed=5)
    assert torch.equal(state, torch.get_rng_state()), "compiling must not disturb the global torch RNG"


def test_programming_happens_once_not_per_forward():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(64, 64))
    chip = ChipConfig.preset("default").replace(read_noise={"output_std": 0.0})
    compiled = crossbar.compile(model, chip, seed=0)
    x = torch.randn(8, 64)
    with torch.no_grad():
        assert torch.equal(compiled(x), compiled(x)), "no per-forward noise: a chip instance is deterministic"
    noisy = crossbar.compile(model, "default", seed=0)
    with torch.no_grad():
        assert not torch.equal(noisy(x), noisy(x)), "output noise is drawn afresh on every forward"


def test_gradients_are_straight_through_to_the_float_weights():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(40, 30), nn.Tanh(), nn.Linear(30, 4))
    x = torch.randn(16, 40, requires_grad=True)
    compiled = crossbar.compile(model, "ideal")
    compiled(x).square().sum().backward()
    grad_x = x.grad.clone()
    x.grad = None
    model(x).square().sum().backward()
    torch.testing.assert_close(grad_x, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled[0].weight.grad, model[0].weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled[2].bias.grad, model[2].bias.grad, rtol=1e-4, atol=1e-5)


def test_fine_tuning_reprograms_the_tiles_and_reduces_the_loss():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 1))
    x, y = torch.randn(256, 20), torch.randn(256, 1)
    compiled = crossbar.compile(model, "default", seed=0)
    optimiser = torch.optim.Adam(compiled.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(nn.functional.mse_loss(compiled(x), y))
    old_weights = compiled[0].tile.weights
    for _ in range(30):
        optimiser.zero_grad()
        nn.functional.mse_loss(compiled(x), y).backward()
        optimiser.step()
    with torch.no_grad():
        after = float(nn.functional.mse_loss(compiled(x), y))
    assert compiled[0].tile.weights is not old_weights
    assert after < 0.8 * before


def test_digital_tiles_exact_and_integer():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(50, 40), nn.ReLU(), nn.Linear(40, 6))
    x = torch.randn(10, 50)
    exact = crossbar.compile(model, "default", digital=["0", "2"])
    with torch.no_grad():
        assert rel_err(exact(x), model(x)) < 1e-6
    int8 = crossbar.compile(model, "default", digital={"0": {"weight_bits": 4, "input_bits": 6}})
    w = model[0].weight.detach().numpy()
    step = np.abs(w).max(axis=1, keepdims=True) / 7
    wq = np.clip(np.rint(w / step), -7, 7) * step
    xn = x.numpy()
    xstep = np.abs(xn).max(axis=1, keepdims=True) / 31
    xq = np.clip(np.rint(xn / xstep), -31, 31) * xstep
    expected = xq @ wq.T + model[0].bias.detach().numpy()
    with torch.no_grad():
        got = int8[0](x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert crossbar.report(int8).layers[0].placement == "digital"
    with pytest.raises(ConfigError, match="no module named 'nope'"):
        crossbar.compile(model, "default", digital=["nope"])


def test_calibrated_ranges_need_inputs_and_then_work():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    x = torch.randn(128, 300)
    chip = ChipConfig.preset("ideal").replace(
        dac={"bits": 8, "mode": "calibrated"}, adc={"bits": 8, "mode": "calibrated", "calibration_percentile": 100.0}
    )
    with pytest.raises(ConfigError, match="calibration_inputs"):
        crossbar.compile(model, chip)
    calibrated = crossbar.compile(model, chip, calibration_inputs=x)
    fixed = crossbar.compile(model, chip.replace(dac={"mode": "fixed", "input_range": 1.0}, adc={"mode": "fixed"}))
    with torch.no_grad():
        err_cal, err_fixed = rel_err(calibrated(x), model(x)), rel_err(fixed(x), model(x))
    assert err_cal < 0.02
    assert err_cal < err_fixed
    with torch.no_grad():  # an optimiser step reprograms the tiles; the calibrated ranges carry over
        calibrated[0].weight.mul_(1.01)
        assert rel_err(calibrated(x), model(x)) < 0.03


def test_report_lists_every_layer_with_tiles_and_utilisation():
    model = nn.Sequential(nn.Linear(300, 600), nn.ReLU(), nn.Linear(600, 10))
    mapping = crossbar.report(crossbar.compile(model, "default"))
    rows = {row.name: row for row in mapping.layers}
    assert rows["0"].tile_grid == (2, 3) and rows["0"].tiles == 6
    assert rows["0"].utilisation == pytest.approx(300 * 600 / (6 * 256 * 256))
    assert rows["1"].placement == "digital" and rows["1"].kind == "ReLU"
    assert rows["2"].tile_grid == (3, 1)
    assert mapping.to_dict()["analog_tiles"] == 9
    assert "Linear" in str(mapping) and "ReLU" in str(mapping)


def test_modules_that_use_their_weights_directly_stay_digital_with_a_warning():
    torch.manual_seed(7)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = nn.Bilinear(16, 16, 16)
            self.out = nn.Linear(16, 3)

        def forward(self, x):
            return self.out(self.pair(x, x))

    model = Net()
    with pytest.warns(UserWarning, match="pair.*computes with its weight matrices directly"):
        compiled = crossbar.compile(model, "ideal")
    assert isinstance(compiled.pair, nn.Bilinear) and isinstance(compiled.out, TiledLinear)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert rel_err(compiled(x), model(x)) < 1e-5


def test_bad_inputs_are_clear_errors():
    model = nn.Sequential(nn.Linear(8, 4))
    compiled = crossbar.compile(model, "default")
    with pytest.raises(ValueError, match="expects 8"):
        compiled(torch.randn(2, 9))
    with pytest.raises(ValueError, match="NaN or inf"):
        compiled(torch.tensor([[float("nan")] * 8]))
    with pytest.raises(ValueError, match="NaN or inf"):
        compiled(torch.full((1, 8), float("inf")))
    with pytest.raises(ValueError, match="no nn.Linear"):
        crossbar.compile(nn.Sequential(nn.ReLU()), "default")
    with pytest.raises(TypeError, match="nn.Module"):
        crossbar.compile("model.pt", "default")
    with pytest.raises(ConfigError, match="unknown preset"):
        crossbar.compile(model, "no-such-chip")
    with pytest.raises(ValueError, match="not compiled"):
        crossbar.report(model)
    conv = crossbar.compile(nn.Sequential(nn.Conv1d(3, 2, 1)), "ideal")
    with pytest.raises(ValueError, match="3 channels"):
        conv(torch.randn(2, 4, 5))
