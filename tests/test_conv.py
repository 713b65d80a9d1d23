"""Convolutions on tiles against torch's float convolutions: every geometry, gradients, chunking, energy counts."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import crossbar
from crossbar import ChipConfig, conv
from crossbar.energy.counting import ActivityCounter
from models.resnet import resnet_small

IDEAL = ChipConfig.preset("ideal").replace(tile={"rows": 64, "cols": 48})  # several tiles per layer


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


CASES = [
    # (dims, in, out, kernel, options)
    (1, 4, 6, 3, {}),
    (1, 6, 9, 5, {"stride": 2, "padding": 3, "dilation": 2, "groups": 3}),
    (1, 4, 4, 4, {"padding": "same", "padding_mode": "circular", "dilation": 3}),
    (2, 3, 8, 3, {"stride": 2, "padding": 1}),
    (2, 8, 12, (3, 2), {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 4, "bias": False}),
    (2, 6, 6, 3, {"padding": "same", "padding_mode": "reflect"}),
    (2, 4, 10, 1, {"stride": 3}),
    (2, 70, 20, 3, {"padding": "valid", "padding_mode": "replicate"}),  # 630 inputs: 10 row blocks of 64
    (3, 4, 6, (2, 3, 1), {"stride": (1, 2, 1), "groups": 2}),
    (3, 3, 5, 3, {"padding": "same", "padding_mode": "replicate", "dilation": (1, 2, 1)}),
]
SIZES = {1: (23,), 2: (11, 9), 3: (5, 7, 6)}


@pytest.mark.parametrize(("dims", "c_in", "c_out", "kernel", "options"), CASES)
def test_ideal_chip_equals_torch_conv_for_every_geometry(dims, c_in, c_out, kernel, options):
    torch.manual_seed(dims * 100 + c_in)
    layer = getattr(nn, f"Conv{dims}d")(c_in, c_out, kernel, **options)
    model = nn.Sequential(layer, nn.ReLU())
    x = torch.randn(3, c_in, *SIZES[dims])
    compiled = crossbar.compile(model, IDEAL)
    assert isinstance(compiled[0], getattr(crossbar, f"TiledConv{dims}d"))
    assert len(compiled[0].tiles) == layer.groups, "each group is its own matrix"
    with torch.no_grad():
        assert rel_err(compiled(x), model(x)) < 1e-5
        assert rel_err(compiled[0](x[0]), layer(x[0])) < 1e-5, "unbatched input, as torch accepts it"


def test_resnet_on_the_ideal_chip_equals_float_and_every_conv_is_analog():
    torch.manual_seed(0)
    model = resnet_small().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 16, 16)
    compiled = crossbar.compile(model, IDEAL)
    with torch.no_grad():
        assert rel_err(compiled(x), model(x)) < 1e-5
    rows = crossbar.report(compiled).layers
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert {r.name for r in rows if r.placement == "analog"} == {*convs, "head"}
    assert all(r.reason for r in rows if r.placement == "digital" and r.parameters), "digital with a reason"


def test_bare_layers_compile_to_tiled_layers():
    torch.manual_seed(1)
    for layer, x in ((nn.Linear(300, 200), torch.randn(4, 300)), (nn.Conv2d(3, 5, 3), torch.randn(2, 3, 8, 8))):
        compiled = crossbar.compile(layer, "ideal")
        assert isinstance(compiled, crossbar.TiledLinear) and type(layer) is not type(compiled)
        with torch.no_grad():
            assert rel_err(compiled(x), layer(x)) < 1e-5
        assert crossbar.report(compiled).layers[0].placement == "analog"


@pytest.mark.parametrize(
    "options", [{"stride": 2, "padding": 2}, {"groups": 2, "padding": "same", "padding_mode": "reflect"}]
)
def test_conv_gradients_are_straight_through(options):
    torch.manual_seed(2)
    layer = nn.Conv2d(4, 6, 3, **options)
    model = nn.Sequential(layer, nn.Tanh(), nn.Conv2d(6, 2, 1))
    compiled = crossbar.compile(model, "ideal")
    x = torch.randn(2, 4, 9, 7, requires_grad=True)
    compiled(x).square().sum().backward()
    grad_x = x.grad.clone()
    x.grad = None
    model(x).square().sum().backward()
    torch.testing.assert_close(grad_x, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled[0].weight.grad, layer.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled[0].bias.grad, layer.bias.grad, rtol=1e-4, atol=1e-5)


def test_conv_fine_tuning_on_the_default_chip_reduces_the_loss():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 1, 3, padding=1))
    x, y = torch.randn(8, 3, 12), torch.randn(8, 1, 12)
    small_tiles = ChipConfig.preset("default").replace(tile={"rows": 32, "cols": 32})  # quicker reprogramming
    compiled = crossbar.compile(model, small_tiles, seed=0)
    optimiser = torch.optim.Adam(compiled.parameters(), lr=2e-2)
    with torch.no_grad():
        before = float(nn.functional.mse_loss(compiled(x), y))
    for _ in range(15):
        optimiser.zero_grad()
        nn.functional.mse_loss(compiled(x), y).backward()
        optimiser.step()
    with torch.no_grad():
        assert float(nn.functional.mse_loss(compiled(x), y)) < 0.8 * before


def test_chunks_of_patches_give_the_whole_image_result(monkeypatch):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(5, 7, 3, stride=1, padding=1))
    x = torch.randn(3, 5, 12, 10)
    compiled = crossbar.compile(model, ChipConfig.preset("default").replace(read_noise={"output_std": 0.0}), seed=1)
    with torch.no_grad():
        whole = compiled(x)
        calls = compiled[0].tile_calls
        for patches in (200, 3):  # whole samples per chunk; then a few output lines of one sample
            monkeypatch.setattr(conv, "CHUNK_BYTES", 4 * 45 * patches)
            before = compiled[0].tile_calls
            torch.testing.assert_close(compiled(x), whole, rtol=0, atol=0)
            assert compiled[0].tile_calls - before > 1
    assert calls == 1


def test_default_chip_error_of_a_conv_is_that_of_a_linear_of_the_same_fan_in():
    torch.manual_seed(5)
    layer = nn.Conv2d(16, 32, 3, padding=1)
    linear = nn.Linear(16 * 9, 32)
    with torch.no_grad():
        linear.weight.copy_(layer.weight.reshape(32, -1))
        linear.bias.copy_(layer.bias)
    x = torch.randn(8, 16, 8, 8)
    patches = nn.functional.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 16 * 9)
    with torch.no_grad():
        conv_err = rel_err(crossbar.compile(layer, "default", seed=3)(x), layer(x))
        lin_err = rel_err(crossbar.compile(linear, "default", seed=3)(patches), linear(patches))
    assert 0.005 < conv_err < 0.5
    assert conv_err == pytest.approx(lin_err, rel=0.3)


def test_energy_counts_one_mvm_per_output_position_and_group():
    torch.manual_seed(6)
    chip = ChipConfig.preset("default").replace(tile={"rows": 16, "cols": 16})
    layer = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=2)
    x = torch.randn(2, 8, 9, 7)
    compiled = crossbar.compile(nn.Sequential(layer), chip)
    result = crossbar.estimate(compiled, x)
    positions = 2 * 5 * 4  # batch x output height x output width
    grid = compiled[0].tiles[0].grid  # one group: 6 outputs x 36 inputs -> 3 row blocks
    assert (grid.row_blocks, grid.out_features) == (3, 6)
    activity = ActivityCounter(compiled, chip).run((x,))["0"]
    assert activity.vectors == positions
    assert activity.adc_conversions == 2 * positions * grid.row_blocks * grid.out_features
    assert activity.macs == positions * 12 * 36
    assert result.layers[0].kind.startswith("Conv2d 3x3/2")


def test_energy_counts_the_overlap_add_of_a_transposed_convolution_and_its_bias_once_per_output():
    """One MVM per input position; every one of its outputs (C_out x kernel offsets) is added into the output
    once, then the bias once per output element, not once per MVM output."""
    chip = ChipConfig.preset("default").replace(tile={"rows": 16, "cols": 16})
    x = torch.randn(2, 4, 5, 3, generator=torch.Generator().manual_seed(1))
    counts = {}
    for bias in (False, True):
        layer = nn.ConvTranspose2d(4, 6, (3, 2), stride=2, bias=bias)
        compiled = crossbar.compile(nn.Sequential(layer), chip)
        activity = ActivityCounter(compiled, chip).run((x,))["0"]
        assert activity.vectors == 2 * 5 * 3
        counts[bias] = activity.digital["add"]
    positions, contributions = 2 * 5 * 3, 6 * 3 * 2  # input positions; outputs of one MVM
    out_elements = 2 * 6 * (2 * 4 + 3) * (2 * 2 + 2)  # batch x C_out x H_out x W_out
    assert counts[True] - counts[False] == out_elements
    # 4 inputs: one row block read in one cycle, so the tiles add no partial sums; only the overlap-add adds
    assert counts[False] == positions * contributions


def test_report_counts_tiles_of_every_group_and_names_depthwise_as_digital_by_design():
    model = nn.Sequential(nn.Conv2d(16, 80, 3, groups=2), nn.Conv2d(80, 80, 5, groups=80), nn.Conv3d(4, 4, 1))
    chip = ChipConfig.preset("default").replace(tile={"rows": 64, "cols": 32}, device={"model": "none"})
    mapping = crossbar.report(crossbar.compile(model, chip))
    rows = {row.name: row for row in mapping.layers}
    assert rows["0"].shape == (40, 8 * 9) and rows["0"].groups == 2
    assert rows["0"].tile_grid == (2, 2) and rows["0"].tiles == 8
    assert rows["1"].placement == "digital" and "depthwise" in rows["1"].reason
    assert rows["2"].kind == "Conv3d 1x1x1"
    assert "2x 40x72" in str(mapping)


def test_calibrated_ranges_and_digital_placement_work_for_convolutions():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 4, 3))
    x = torch.randn(8, 3, 12, 12)
    chip = ChipConfig.preset("ideal").replace(
        dac={"bits": 8, "mode": "calibrated"}, adc={"bits": 8, "mode": "calibrated", "calibration_percentile": 100.0}
    )
    calibrated = crossbar.compile(model, chip, calibration_inputs=x)
    with torch.no_grad():
        assert rel_err(calibrated(x), model(x)) < 0.02
        exact = crossbar.compile(model, "default", digital=["0", "2"])
        assert rel_err(exact(x), model(x)) < 1e-5
    assert {row.placement for row in crossbar.report(exact).layers if row.name in ("0", "2")} == {"digital"}


def test_bad_conv_inputs_are_clear_errors():
    compiled = crossbar.compile(nn.Conv2d(3, 4, 5), "ideal")
    with pytest.raises(ValueError, match="3 channels"):
        compiled(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        compiled(torch.randn(1, 3, 4, 8))
    with pytest.raises(ValueError, match="NaN or inf"):
        compiled(torch.full((1, 3, 6, 6), float("nan")))
    transposed = crossbar.compile(nn.ConvTranspose2d(3, 4, 3), "ideal")
    with pytest.raises(ValueError, match="3 channels"):
        transposed(torch.randn(1, 4, 8, 8))


TRANSPOSED = [
    (1, 4, 6, 5, {"stride": 3, "dilation": 2, "groups": 2, "padding": 2}),
    (2, 6, 8, 3, {"stride": 2, "padding": 1, "output_padding": 1}),
    (2, 3, 5, 4, {"stride": 2, "padding": 3, "output_padding": (0, 1), "dilation": (1, 2), "bias": False}),
    (3, 4, 6, (2, 3, 1), {"stride": (1, 2, 1), "groups": 2}),
]


@pytest.mark.parametrize(("dims", "c_in", "c_out", "kernel", "options"), TRANSPOSED)
def test_transposed_convolutions_equal_torch_and_pass_gradients(dims, c_in, c_out, kernel, options):
    torch.manual_seed(dims + c_out)
    layer = getattr(nn, f"ConvTranspose{dims}d")(c_in, c_out, kernel, **options)
    compiled = crossbar.compile(layer, IDEAL)
    assert isinstance(compiled, crossbar.TiledConvTranspose) and len(compiled.tiles) == layer.groups
    x = torch.randn(2, c_in, *SIZES[dims], requires_grad=True)
    y = compiled(x)
    assert rel_err(y.detach(), layer(x).detach()) < 1e-5
    y.square().sum().backward()
    grad_x = x.grad.clone()
    x.grad = None
    layer(x).square().sum().backward()
    torch.testing.assert_close(grad_x, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled.weight.grad, layer.weight.grad, rtol=1e-4, atol=1e-5)
    counter = ActivityCounter(crossbar.compile(layer, "default"), ChipConfig.preset("default"))
    assert counter.run((x.detach(),))["(model)"].vectors == 2 * math.prod(SIZES[dims]), "one MVM per input position"


def test_patch_view_matches_torch_unfold():
    x = torch.randn(2, 6, 9, 8)
    geometry = conv.ConvGeometry.of(nn.Conv2d(6, 2, (3, 2), stride=(2, 1), dilation=(1, 3), groups=2))
    channels_last = x.movedim(1, -1)
    ours = conv.patch_view(channels_last, geometry, groups=2)  # (B, out_h, out_w, G, kh, kw, C/G)
    theirs = nn.functional.unfold(x, (3, 2), dilation=(1, 3), stride=(2, 1))  # (B, C * kh * kw, L)
    theirs = theirs.reshape(2, 2, 3, 3, 2, -1).permute(0, 5, 1, 3, 4, 2)  # (B, L, G, kh, kw, C/G)
    assert torch.equal(ours.reshape(theirs.shape), theirs)
    assert math.prod(geometry.output_size((9, 8))) == theirs.shape[1]
    assert np.shares_memory(ours.numpy(), x.numpy()), "a view, not a copy"
