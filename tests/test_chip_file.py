"""crossbar.save / crossbar.load: a programmed chip instance round-trips bit for bit; bad files are refused."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import crossbar
from crossbar import ChipConfig, ConfigError, TiledLinear
from crossbar.chip_file import FORMAT_VERSION, MAGIC, read_header


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(70, 50), nn.ReLU(), nn.Linear(50, 40), nn.Tanh(), nn.Linear(40, 10))


def chip_with_everything() -> ChipConfig:
    """The default chip (PCM programming error and drift, 8-bit DAC/ADC, read noise, IR drop) on small tiles,
    with per-cell read noise and calibrated ADC ranges too, so every part of the programmed state is in play."""
    return ChipConfig.preset("default").replace(
        tile={"rows": 32, "cols": 32}, read_noise={"cell_std": 0.02}, adc={"mode": "calibrated"}
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = small_model()
    x = torch.randn(16, 70, generator=torch.Generator().manual_seed(1))
    analog = crossbar.compile(
        model, chip_with_everything(), seed=7, digital={"2": {"weight_bits": 6}}, calibration_inputs=x
    )
    with torch.no_grad():
        analog(x)  # a forward before saving: the per-forward noise stream must continue where it stands
    path = tmp_path_factory.mktemp("chip") / "mlp.xbar"
    header = crossbar.save(analog, path)
    return analog, path, header, x


def test_round_trip_is_bit_identical_and_programs_nothing(saved):
    analog, path, _, x = saved
    loaded = crossbar.load(path)
    with torch.no_grad():
        for _ in range(2):  # the same per-forward noise draws, call after call
            assert torch.equal(loaded(x), analog(x))
    for name, layer in loaded.named_modules():
        if isinstance(layer, TiledLinear) and layer.placement == "analog":
            original = analog.get_submodule(name).tile.record
            assert torch.equal(
                torch.from_numpy(layer.tile.record.block_weights), torch.from_numpy(original.block_weights)
            )
            assert layer._programmed.version == layer.weight._version  # no reprogramming at the next forward
            # each programmed array is stored once: the effective weights are a view, not a second copy
            assert np.shares_memory(layer.tile.weights, layer.tile.block_weights)
            assert layer.tile.record.block_weights is layer.tile.block_weights
    # a different chip instance of the same model really differs: the equality above is not trivial
    other = crossbar.compile(small_model(), chip_with_everything(), seed=8, calibration_inputs=x)
    with torch.no_grad():
        assert not torch.equal(other(x), analog(x))


def test_header_holds_chip_seed_and_versions(saved):
    analog, path, header, _ = saved
    assert read_header(path) == header
    assert header["format_version"] == FORMAT_VERSION and header["crossbar_version"] == crossbar.__version__
    assert set(header["layers"]) == {"0", "2", "4"}
    for name, entry in header["layers"].items():
        layer = analog.get_submodule(name)
        assert entry["seed"] == layer.seed and entry["shape"] == [layer.out_features, layer.in_features]
        assert ChipConfig.from_dict(entry["chip"]) == chip_with_everything()
    assert header["layers"]["2"]["placement"] == "digital"
    assert not [p for p in path.parent.iterdir() if p.name != path.name], "the atomic write left a temporary file"


def _rewrite(path, target, edit):
    data = path.read_bytes()
    target.write_bytes(edit(data))
    return target


def test_truncated_corrupt_foreign_and_newer_files_are_refused(saved, tmp_path):
    _, path, header, _ = saved
    original = path.read_bytes()
    truncated = _rewrite(path, tmp_path / "truncated.xbar", lambda d: d[: len(d) - 1000])
    with pytest.raises(ConfigError, match="truncated"):
        crossbar.load(truncated)
    cut_in_header = _rewrite(path, tmp_path / "cut.xbar", lambda d: d[: len(MAGIC) + 20])
    with pytest.raises(ConfigError, match="truncated"):
        crossbar.load(cut_in_header)

    def flip(data):
        middle = len(data) - len(data) // 3
        return data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1 :]

    with pytest.raises(ConfigError, match="corrupt"):
        crossbar.load(_rewrite(path, tmp_path / "flipped.xbar", flip))
    with pytest.raises(ConfigError, match="not a crossbar chip file"):
        crossbar.load(_rewrite(path, tmp_path / "foreign.pt", lambda d: d[len(MAGIC) :]))

    def version(number):
        def edit(data):
            rest = data[len(MAGIC) :]
            line, payload = rest.split(b"\n", 1)
            return MAGIC + json.dumps({**json.loads(line), "format_version": number}).encode() + b"\n" + payload

        return edit

    reads = f"reads version {FORMAT_VERSION}"
    for other in (FORMAT_VERSION - 1, FORMAT_VERSION + 1):  # version 1 stored numpy pickles: not read any more
        with pytest.raises(ConfigError, match=f"format version {other}.*{reads}"):
            crossbar.load(_rewrite(path, tmp_path / f"v{other}.xbar", version(other)))
    with pytest.raises(ConfigError, match="no such file"):
        crossbar.load(tmp_path / "missing.xbar")
    assert path.read_bytes() == original, "loading must never modify the file"


def test_save_refuses_a_model_with_no_tiles(tmp_path):
    with pytest.raises(ValueError, match="no tiled layer"):
        crossbar.save(small_model(), tmp_path / "float.xbar")
    assert not list(tmp_path.iterdir())


def test_chip_file_stores_each_programmed_array_once(tmp_path):
    """The payload is the float parameters plus each tile's arrays, each stored once (the effective weights are
    a view of the padded block weights: stored as one more copy, the file would grow by the weights' bytes)."""
    chip = ChipConfig.preset("default").replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    analog = crossbar.compile(nn.Sequential(nn.Linear(600, 300)), chip, seed=3)
    tile = analog[0].tile
    arrays = [tile.block_weights, tile.digital_scale, tile.full_scale, tile.row_conductance]
    stored = sum(p.numel() * p.element_size() for p in analog.parameters()) + sum(a.nbytes for a in arrays)
    header = crossbar.save(analog, tmp_path / "linear.xbar")
    assert stored < header["payload_bytes"] < stored + 64 * 1024
    assert tile.weights.nbytes > 64 * 1024  # a second copy of the weights would not fit in that margin
