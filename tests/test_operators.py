"""Shared and tied weights, registered layer types, and no silent bypass of the tiles (fused fast paths)."""

import pytest
import torch
from conftest import _TileGuard
from torch import nn
from torch.nn.modules import module as torch_module

import crossbar
from crossbar import ChipConfig, TiledLinear, compiler

CHIP = ChipConfig.preset("default").replace(tile={"rows": 64, "cols": 64})  # small tiles: quick to program


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


class TwoNames(nn.Module):
    """One Linear registered under two names and applied twice."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.b = self.a

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_a_module_under_two_names_is_one_tiled_layer_used_under_both():
    torch.manual_seed(0)
    model = TwoNames()
    compiled = crossbar.compile(model, CHIP)
    assert isinstance(compiled.a, TiledLinear) and compiled.b is compiled.a
    with torch.no_grad():
        compiled(torch.randn(4, 16))
    assert compiled.a.tile_calls == 2
    mapping = crossbar.report(compiled)
    (row,) = [r for r in mapping.layers if r.placement == "analog"]
    assert row.aliases == ["b"] and mapping.analog_tiles == 1
    ideal = crossbar.compile(model, "ideal")
    x = torch.randn(5, 16)
    with torch.no_grad():
        assert rel_err(ideal(x), model(x)) < 1e-5


class TiedLM(nn.Module):
    """An embedding whose weight is also the output head's (weight tying), and a second head sharing it too."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 24)
        self.mix = nn.Linear(24, 24)
        self.head = nn.Linear(24, 50, bias=False)
        self.head.weight = self.embed.weight
        self.other = nn.Linear(24, 50)
        self.other.weight = self.embed.weight

    def forward(self, ids):
        h = torch.tanh(self.mix(self.embed(ids)))
        return self.head(h) + self.other(h)


def test_a_weight_tied_to_an_embedding_is_one_programmed_matrix():
    torch.manual_seed(1)
    model = TiedLM()
    ids = torch.randint(0, 50, (3, 7))
    compiled = crossbar.compile(model, CHIP)
    assert compiled.head.weight is compiled.embed.weight, "the tie survives: fine-tuning updates both"
    assert compiled.other._programmed is compiled.head._programmed, "one programmed matrix for the tied weight"
    mapping = {row.name: row for row in crossbar.report(compiled).layers}
    assert mapping["other"].shares == "head" and mapping["other"].tiles == 0
    assert mapping["embed"].placement == "digital" and "lookup" in mapping["embed"].reason
    with torch.no_grad():
        assert rel_err(crossbar.compile(model, "ideal")(ids), model(ids)) < 1e-5
    optimiser = torch.optim.SGD(compiled.parameters(), lr=0.1)
    compiled(ids).square().mean().backward()
    optimiser.step()
    before = compiled.head.tiles[0]
    with torch.no_grad():
        compiled(ids)
    assert compiled.head.tiles[0] is not before and compiled.other.tiles[0] is compiled.head.tiles[0]


def encoder(layers=2):
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=True).eval()


def test_transformer_encoder_in_eval_under_no_grad_runs_on_the_tiles():
    torch.manual_seed(2)
    model = encoder()
    x = torch.randn(4, 10, 32)
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[:, 8:] = True
    compiled = crossbar.compile(model, "default")
    with torch.no_grad():
        reference = model(x, src_key_padding_mask=mask)
        analog = compiled(x, src_key_padding_mask=mask)
        plain, float_plain = compiled(x), model(x)
    keep = ~mask
    error = rel_err(analog[keep], reference[keep])
    assert 0.003 < error < 0.3, "the chip's noise, not float (the fused path would give exactly 0)"
    assert rel_err(plain, float_plain) > 0.003
    assert torch.backends.mha.get_fastpath_enabled(), "the global switch is restored after the forward"
    ideal = crossbar.compile(model, "ideal")
    with torch.no_grad():
        assert rel_err(ideal(x, src_key_padding_mask=mask)[keep], reference[keep]) < 1e-5


@pytest.mark.tiles_may_idle
def test_the_guard_catches_a_fused_path_that_bypasses_the_tiles(monkeypatch):
    torch.manual_seed(3)
    model = encoder(1)
    # a tiled attention has no in_proj_weight, which keeps torch off its fused path by itself: leave the
    # attention unconverted here so that only crossbar's switch stands between the fused kernel and the weights
    monkeypatch.setitem(compiler.CONVERTERS, nn.MultiheadAttention, compiler._reads_weights_directly)
    with pytest.warns(UserWarning, match="self_attn.*stays digital"):
        compiled = crossbar.compile(model, "ideal")
    for module in compiled.modules():  # undo crossbar's fast-path switch: the fused kernel reads the weights
        module._forward_pre_hooks.clear()
        module._forward_hooks.clear()
    compiled.use_nested_tensor = True
    guard = _TileGuard()
    handles = [
        torch_module.register_module_forward_pre_hook(guard.pre),
        torch_module.register_module_forward_hook(guard.post, always_call=True),
    ]
    try:
        with torch.no_grad():
            compiled(torch.randn(2, 5, 32))
    finally:
        for handle in handles:
            handle.remove()
    assert any("linear1" in failure for failure in guard.failures)


def test_register_layer_maps_a_user_layer_type():
    class Scaled(nn.Module):
        """x @ W: a matrix product under another name, its weight stored (in, out)."""

        def __init__(self):
            super().__init__()
            self.kernel = nn.Parameter(torch.randn(12, 5))

        def forward(self, x):
            return x @ self.kernel

    torch.manual_seed(4)
    model = nn.Sequential(Scaled(), nn.ReLU(), nn.Linear(5, 2))
    with pytest.warns(UserWarning, match="0 stays digital: no converter for Scaled"):
        crossbar.compile(model, "ideal")
    crossbar.register_layer(Scaled, weight_of=lambda m: m.kernel, bias_of=lambda m: None, transposed=True)
    try:
        compiled = crossbar.compile(model, "ideal")
        x = torch.randn(6, 12)
        with torch.no_grad():
            assert rel_err(compiled(x), model(x)) < 1e-5
        assert crossbar.report(compiled).layers[0].kind == "Scaled"
        assert compiled[0].weight.shape == (12, 5), "the stored layout is kept"
        assert crossbar.compiler.mapped_layers(model) == ["0", "2"]
        noisy = crossbar.weight_noise.noisy_copy(model, crossbar.WeightNoise(level=0.1), seed=0)
        change = (noisy[0].kernel - model[0].kernel).abs()
        assert 0 < float(change.max().detach()) < 0.5 * float(model[0].kernel.abs().max().detach())
    finally:
        crossbar.compiler.CONVERTERS.pop(Scaled)
        crossbar.compiler._MATRIX_LAYERS.pop(Scaled)
    with pytest.raises(TypeError, match="nn.Module subclass"):
        crossbar.register_layer(int)


def test_gpt2_conv1d_layers_map_when_transformers_is_installed():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=16, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0
    )
    torch.manual_seed(5)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 64, (2, 9))
    compiled = crossbar.compile(model, ChipConfig.preset("ideal"))
    with torch.no_grad():
        assert rel_err(compiled(ids).logits, model(ids).logits) < 1e-5
    rows = crossbar.report(compiled).layers
    assert sum(row.kind == "Conv1D" and row.placement == "analog" for row in rows) == 8
    assert compiled.lm_head.weight is compiled.transformer.wte.weight
