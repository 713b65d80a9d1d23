"""HPD: exactness of the SVD split, compile(hpd=...), the noise models, sensitivity ranking, budget placement."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import crossbar
from crossbar import hpd, sensitivity
from crossbar.cli import main as cli_main
from crossbar.config import ConfigError
from crossbar.weight_noise import WeightNoise, noisy_copy, perturb, tile_reference
from models import zoo
from models.backbone import SequenceModel


class _Mixer(nn.Module):
    """A per-step mixer with Mamba's projection names: out_proj(gelu(in_proj(x)))."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(d, 2 * d)
        self.out_proj = nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(nn.functional.gelu(self.in_proj(x)))


def _lm(seed: int = 0, layers: int = 3) -> SequenceModel:
    torch.manual_seed(seed)
    return SequenceModel(13, 16, layers, 13, _Mixer, task="lm").eval()


@pytest.mark.parametrize("orientation", hpd.ORIENTATIONS)
def test_decomposition_is_exact_in_both_orientations(orientation):
    torch.manual_seed(0)
    layer = nn.Linear(50, 30)
    split = hpd.decompose(layer, orientation)
    x = torch.randn(20, 50)
    torch.testing.assert_close(split(x), layer(x), atol=1e-5, rtol=0)
    inner, outer = split.inner.weight.double(), split.outer.weight.double()
    # the digital factor has orthonormal rows (V^T) or columns (U); the analog one carries the singular values
    orthonormal = inner if orientation == "us_analog" else outer.T
    torch.testing.assert_close(orthonormal @ orthonormal.T, torch.eye(30, dtype=torch.float64), atol=1e-5, rtol=0)
    assert split.digital_factor == ("inner" if orientation == "us_analog" else "outer")
    assert split.digital_macs() == 30 * (50 if orientation == "us_analog" else 30)


@pytest.mark.parametrize("rank", [1, 5, 17])
def test_truncation_error_is_the_tail_of_singular_values(rank):
    torch.manual_seed(1)
    layer = nn.Linear(40, 24, bias=False)
    s = torch.linalg.svdvals(layer.weight.double())
    for orientation in hpd.ORIENTATIONS:
        split = hpd.decompose(layer, orientation, rank=rank)
        error = layer.weight.double() - split.outer.weight.double() @ split.inner.weight.double()
        assert torch.linalg.matrix_norm(error, ord=2).item() == pytest.approx(s[rank].item(), rel=1e-4)
        assert torch.linalg.matrix_norm(error).item() == pytest.approx(s[rank:].square().sum().sqrt().item(), rel=1e-4)


@pytest.mark.parametrize("spec", [["blocks.-1.mixer.out_proj"], "auto", {"blocks.2.mixer.out_proj": {}}])
def test_compile_with_hpd_on_the_ideal_chip_equals_float(spec):
    model = _lm()
    ids = torch.randint(0, 13, (3, 9), generator=torch.Generator().manual_seed(0))
    compiled = crossbar.compile(model, "ideal", hpd=spec)
    torch.testing.assert_close(compiled(ids), model(ids), atol=1e-5, rtol=0)
    placed = {row.name: (row.placement, row.hpd) for row in crossbar.report(compiled).layers}
    assert placed["blocks.2.mixer.out_proj.inner"] == ("digital", "V^T")
    assert placed["blocks.2.mixer.out_proj.outer"] == ("analog", "U*S")
    assert placed["blocks.1.mixer.out_proj"] == ("analog", None)
    assert isinstance(model.blocks[2].mixer.out_proj, nn.Linear)  # the float model is untouched
    text = str(crossbar.report(compiled))
    assert "HPD blocks.2.mixer.out_proj: rank 16, U*S analog, V^T digital (512 digital MACs" in text


def test_compile_hpd_options_orientation_rank_and_integer_digital_factor():
    model = _lm()
    ids = torch.randint(0, 13, (3, 9), generator=torch.Generator().manual_seed(0))
    options = {"orientation": "svt_analog", "weight_bits": 8, "input_bits": 8}
    compiled = crossbar.compile(model, "ideal", hpd={"blocks.0.mixer.out_proj": options})
    factor = compiled.get_submodule("blocks.0.mixer.out_proj.outer")
    assert factor.placement == "digital" and factor.tile.weight_bits == 8
    torch.testing.assert_close(compiled(ids), model(ids), atol=0.05, rtol=0)  # 8-bit digital factor
    truncated = crossbar.compile(model, "ideal", hpd={"blocks.0.mixer.out_proj": {"rank": 4}})
    assert truncated.get_submodule("blocks.0.mixer.out_proj.inner").out_features == 4


def test_a_chip_instance_with_hpd_differs_from_the_plain_one_only_in_the_split_layer():
    model = _lm()
    chip = crossbar.ChipConfig.preset("default").replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    plain = crossbar.compile(model, chip, seed=5)
    split = crossbar.compile(model, chip, seed=5, hpd=["blocks.1.mixer.out_proj"])
    for name in ("blocks.0.mixer.out_proj", "blocks.2.mixer.in_proj", "decoder"):
        np.testing.assert_array_equal(plain.get_submodule(name).tile.weights, split.get_submodule(name).tile.weights)
    assert (
        split.get_submodule("blocks.1.mixer.out_proj.outer").seed == plain.get_submodule("blocks.1.mixer.out_proj").seed
    )


def test_hpd_bad_input_errors():
    model = _lm()
    with pytest.raises(ConfigError, match="no submodule 'nope'"):
        crossbar.compile(model, "ideal", hpd=["blocks.0.mixer.nope"])
    with pytest.raises(ConfigError, match="index 3 out of range"):
        crossbar.compile(model, "ideal", hpd=["blocks.3.mixer.out_proj"])
    with pytest.raises(ConfigError, match="LayerNorm"):
        crossbar.compile(model, "ideal", hpd=["blocks.0.norm"])
    with pytest.raises(ConfigError, match="'auto'"):
        crossbar.compile(model, "ideal", hpd="blocks.0.mixer.out_proj")
    with pytest.raises(ConfigError, match="unknown option 'bits'"):
        crossbar.compile(model, "ideal", hpd={"blocks.0.mixer.out_proj": {"bits": 8}})
    with pytest.raises(ConfigError, match="both digital= and hpd="):
        crossbar.compile(model, "ideal", hpd=["decoder"], digital=["decoder"])
    with pytest.raises(ConfigError, match="out_proj"):
        crossbar.compile(nn.Sequential(nn.Linear(3, 3)), "ideal", hpd="auto")
    with pytest.raises(TypeError, match="Conv1d"):
        hpd.decompose(nn.Conv1d(3, 3, 1))
    for rank in (0, 17, 2.5):
        with pytest.raises(ValueError, match="rank"):
            hpd.decompose(nn.Linear(16, 32), rank=rank)
    with pytest.raises(ValueError, match="orientation"):
        hpd.decompose(nn.Linear(4, 4), "u_digital")
    broken = nn.Linear(4, 4)
    with torch.no_grad():
        broken.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        hpd.decompose(broken)


def test_additive_noise_relative_to_tile_and_layer_peaks():
    torch.manual_seed(2)
    weight = torch.randn(300, 200)
    weight[5, 150] = 20.0  # one outlier: its tile's noise is larger
    tile = (128, 64)  # crossbar rows = inputs, cols = outputs
    expected = torch.empty_like(weight)
    for r, c in itertools.product(range(0, 200, 128), range(0, 300, 64)):
        block = weight[c : c + 64, r : r + 128]
        expected[c : c + 64, r : r + 128] = block.abs().max()
    torch.testing.assert_close(tile_reference(weight, tile), expected)
    for reference, ref in (("tile", expected), ("layer", weight.abs().max())):
        noise = WeightNoise("additive", 0.1, reference, tile)
        z = (perturb(weight, noise, torch.Generator().manual_seed(0)) - weight) / (0.1 * ref)
        assert abs(z.mean().item()) < 4 / np.sqrt(z.numel())
        assert z.std().item() == pytest.approx(1.0, abs=0.02)


def test_multiplicative_noise_statistics_and_seeds():
    weight = torch.rand(200, 300) + 0.5
    noise = WeightNoise("multiplicative", 0.2)
    noisy = perturb(weight, noise, torch.Generator().manual_seed(0))
    z = (noisy / weight - 1) / 0.2
    assert abs(z.mean().item()) < 4 / np.sqrt(z.numel())
    assert z.std().item() == pytest.approx(1.0, abs=0.02)
    torch.testing.assert_close(perturb(weight, noise, torch.Generator().manual_seed(0)), noisy)
    assert not torch.equal(perturb(weight, noise, torch.Generator().manual_seed(1)), noisy)


def test_noisy_copy_touches_only_the_chosen_analog_layers():
    model = _lm()
    noise = WeightNoise("additive", 0.1)
    noisy = noisy_copy(model, noise, seed=3, layers=["blocks.1.mixer.in_proj"])
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, noisy.get_parameter(n))}
    assert changed == {"blocks.1.mixer.in_proj.weight"}
    again = noisy_copy(model, noise, seed=3, layers=["blocks.1.mixer.in_proj", "decoder"])
    torch.testing.assert_close(again.blocks[1].mixer.in_proj.weight, noisy.blocks[1].mixer.in_proj.weight)
    split = noisy_copy(model, noise, seed=3, hpd=["blocks.-1.mixer.out_proj"])
    exact = hpd.decompose(model.blocks[2].mixer.out_proj)
    torch.testing.assert_close(split.blocks[2].mixer.out_proj.inner.weight, exact.inner.weight)  # digital: exact
    assert not torch.equal(split.blocks[2].mixer.out_proj.outer.weight, exact.outer.weight)
    with pytest.raises(ConfigError, match="not an analog layer"):
        noisy_copy(model, noise, 0, layers=["blocks.2.mixer.out_proj.inner"], hpd="auto")


def test_device_noise_compiles_only_the_chosen_layer():
    model = _lm()
    chip = crossbar.ChipConfig.preset("default")
    compiled = noisy_copy(model, WeightNoise("device", chip=chip), seed=0, layers=["decoder"])
    placement = {row.name: row.placement for row in crossbar.report(compiled).layers if row.shape}
    assert placement.pop("decoder") == "analog"
    assert set(placement.values()) == {"digital"}


def test_noise_model_bad_input():
    with pytest.raises(ConfigError, match="noise.kind"):
        WeightNoise("gaussian")
    with pytest.raises(ConfigError, match="noise.level"):
        WeightNoise("additive", float("nan"))
    with pytest.raises(ConfigError, match="noise.reference"):
        WeightNoise("additive", 0.1, "column")
    with pytest.raises(ConfigError, match="noise.tile"):
        WeightNoise("additive", 0.1, tile=(0, 4))


def _fragile_lm() -> tuple[SequenceModel, torch.Tensor, torch.Tensor]:
    """An LM whose blocks.1.mixer.in_proj holds one huge weight on a unit nothing reads: the model computes
    the same function, but additive noise relative to that layer's peak swamps all its other weights."""
    model = _lm(seed=4)
    with torch.no_grad():
        model.blocks[1].mixer.in_proj.weight[7, 3] = 60.0
        model.blocks[1].mixer.out_proj.weight[:, 7] = 0.0
    ids = torch.randint(0, 13, (16, 12), generator=torch.Generator().manual_seed(1))
    return model, ids, model(ids).argmax(-1)


def test_sensitivity_ranks_the_fragile_layer_and_block_first():
    model, ids, targets = _fragile_lm()
    loss = zoo.cross_entropy(ids, targets)
    noise = WeightNoise("additive", 0.05, "layer")
    by_layer = sensitivity.analyse(model, loss, noise, seeds=range(2), by="layer")
    assert by_layer.rows[0].name == "blocks.1.mixer.in_proj"
    assert by_layer.baseline == pytest.approx(loss(model))
    assert len(by_layer.rows) == 7 and by_layer.rows[0].macs == 16 * 32
    by_block = sensitivity.analyse(model, loss, noise, seeds=range(2), by="block")
    assert [r.name for r in by_block.rows][0] == "blocks.1"
    assert sorted(r.name for r in by_block.rows) == ["blocks.0", "blocks.1", "blocks.2", "decoder"]
    by_type = sensitivity.analyse(model, loss, noise, seeds=range(2), by="type")
    assert by_type.rows[0].name == "blocks.*.mixer.in_proj"  # noise on every block's in_proj holds the fragile one
    assert sorted(r.name for r in by_type.rows) == ["blocks.*.mixer.in_proj", "blocks.*.mixer.out_proj", "decoder"]
    assert by_type.rows[0].layers == [f"blocks.{b}.mixer.in_proj" for b in range(3)]
    assert "blocks.1.mixer.in_proj" in str(by_layer)
    assert sensitivity.Sensitivity.from_dict(by_layer.to_dict()) == by_layer
    assert sensitivity.place_digital(by_layer, 16 * 32) == ["blocks.1.mixer.in_proj"]


def _result(values_and_macs):
    rows = [sensitivity.SensitivityRow(f"l{i}", [f"l{i}"], m, v, 0.0) for i, (v, m) in enumerate(values_and_macs)]
    return sensitivity.Sensitivity(0.0, {}, "layer", [0], sorted(rows, key=lambda r: -r.increase))


def test_budget_placement_respects_the_budget_and_nears_the_optimum():
    rng = np.random.default_rng(0)
    for _ in range(50):
        items = [(float(rng.exponential()), int(rng.integers(1, 100))) for _ in range(7)]
        result, budget = _result(items), int(rng.integers(0, 300))
        macs = {f"l{i}": m for i, (_, m) in enumerate(items)}
        value = {f"l{i}": v for i, (v, _) in enumerate(items)}
        chosen = sensitivity.place_digital(result, budget)
        assert sum(macs[n] for n in chosen) <= budget
        best = max(
            sum(value[n] for n in subset)
            for k in range(8)
            for subset in itertools.combinations(macs, k)
            if sum(macs[n] for n in subset) <= budget
        )
        assert sum(value[n] for n in chosen) >= 0.5 * best - 1e-12
        assert sum(macs[n] for n in sensitivity.random_placement(result, budget, rng)) <= budget
    assert sorted(sensitivity.place_digital(_result([(1.0, 10), (0.5, 4), (0.6, 6)]), 10)) == ["l1", "l2"]  # 1.1 > 1.0
    with pytest.raises(ConfigError, match="budget"):
        sensitivity.place_digital(_result([(1.0, 10)]), -1)


def test_cli_sensitivity_on_a_saved_model_and_data(tmp_path, capsys):
    model, ids, targets = _fragile_lm()
    torch.save(model, tmp_path / "lm.pt")
    torch.save({"inputs": ids, "targets": targets}, tmp_path / "data.pt")
    args = ["sensitivity", str(tmp_path / "lm.pt"), "--data", str(tmp_path / "data.pt"), "--seeds", "2"]
    assert cli_main([*args, "--reference", "layer", "--plot", str(tmp_path / "s.png"), "--budget", "600"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[3].split()[1] == "blocks.1.mixer.in_proj"
    assert "digital placement for 600 MACs per vector: blocks.1.mixer.in_proj" in out
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert cli_main(["sensitivity", str(tmp_path / "missing.pt")]) == 2
    assert "neither a built-in model" in capsys.readouterr().err
    assert cli_main(["sensitivity", str(tmp_path / "lm.pt")]) == 2
    assert "needs --data" in capsys.readouterr().err
    torch.save({"inputs": ids}, tmp_path / "bad.pt")
    assert cli_main(["sensitivity", str(tmp_path / "lm.pt"), "--data", str(tmp_path / "bad.pt")]) == 2
    assert "targets" in capsys.readouterr().err


def test_shipped_stand_in_lm_and_its_held_out_text():
    model = zoo.load_model("gated-conv-lm")
    inputs, targets = zoo.held_out("tiny-shakespeare", tokens=2048, length=128)
    assert inputs.shape == (16, 128) and torch.equal(inputs[:, 1:], targets[:, :-1])
    loss = zoo.cross_entropy(inputs, targets)
    assert np.exp(loss(model)) < 6.0  # trained: 65 characters uniformly would be 65
    compiled = crossbar.compile(model, "ideal", hpd="auto")  # its depthwise convolutions stay digital
    assert crossbar.report(compiled).hpd[0].name == "blocks.3.mixer.out_proj"
    torch.testing.assert_close(compiled(inputs[:2]), model(inputs[:2]), atol=1e-4, rtol=0)


def test_auto_takes_the_last_output_projection_of_a_llama_style_model():
    """Hugging Face Llama names a block's output projection ``o_proj``: hpd="auto" takes the last one, and on the
    ideal chip the split layer still computes the float layer (an independent float reference)."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.o_proj, self.down_proj = nn.Linear(12, 12, bias=False), nn.Linear(12, 12, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.down_proj(torch.relu(self.o_proj(x)))

    torch.manual_seed(0)
    model = nn.Sequential(Block(), Block()).eval()
    assert hpd.default_layer(model) == "1.o_proj"
    compiled = crossbar.compile(model, "ideal", hpd="auto")
    assert isinstance(compiled[1].o_proj, hpd.HPDLinear) and not isinstance(compiled[0].o_proj, hpd.HPDLinear)
    x = torch.randn(5, 12)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
