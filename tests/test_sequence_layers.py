"""Attention and recurrent layers on tiles: ideal tiles equal torch's float layers in every option, every
projection runs through its tiles, the default chip adds the noise of a tiled Linear, gradients flow."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import crossbar
from crossbar import ChipConfig, TiledLinear
from crossbar.attention import TiledMultiheadAttention, convert_attention
from crossbar.compiler import layer_seed
from crossbar.recurrent import convert_recurrent

IDEAL = ChipConfig.preset("ideal")
DEFAULT = ChipConfig.preset("default").replace(tile={"rows": 64, "cols": 64})  # small tiles: quick to program


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def tiler(chip=IDEAL, seed=0):
    """make_tiled for the converters: each matrix its own seed, in the order they are programmed."""
    count = itertools.count()
    return lambda weight, bias, name: TiledLinear(weight, bias, chip, layer_seed(seed, next(count)))


def convert(model, chip=IDEAL, seed=0):
    """``crossbar.compile`` of ``model``; checks that every attention and recurrent layer was converted."""
    compiled = crossbar.compile(model, chip, seed=seed)
    for name, module in compiled.named_modules():
        if isinstance(module, nn.MultiheadAttention | nn.RNNBase | nn.RNNCellBase):
            assert isinstance(module, TiledMultiheadAttention), f"{name} not converted"
    return compiled


class TileCalls:
    """Tiled calls of every tiled layer of a model since construction (``TiledLinear.tile_calls``)."""

    def __init__(self, model):
        self.layers = {name: m for name, m in model.named_modules() if isinstance(m, TiledLinear)}
        self.start = {name: m.tile_calls for name, m in self.layers.items()}

    @property
    def calls(self):
        return {name: m.tile_calls - self.start[name] for name, m in self.layers.items()}

    def unused(self):
        return [name for name, n in self.calls.items() if n == 0]


# ---------------------------------------------------------------------------------------------- attention

MHA_OPTIONS = [
    {},
    {"batch_first": True},
    {"kdim": 5, "vdim": 7},
    {"kdim": 5, "vdim": 7, "batch_first": True, "bias": False},
    {"add_bias_kv": True},
    {"add_zero_attn": True, "add_bias_kv": True, "batch_first": True},
    {"bias": False},
]


def _mha_inputs(options, batch, tgt, src, embed=8, self_attention=False):
    shape = (lambda n: (batch, n)) if options.get("batch_first") else (lambda n: (n, batch))
    query = torch.randn(*shape(tgt), embed)
    if self_attention:
        return query, query, query
    key = torch.randn(*shape(src), options.get("kdim", embed))
    return query, key, torch.randn(*shape(src), options.get("vdim", embed))


@pytest.mark.parametrize("options", MHA_OPTIONS)
def test_attention_equals_torch_in_every_option(options):
    torch.manual_seed(len(options))
    heads, batch, tgt, src = 2, 3, 4, 6
    float_mha = nn.MultiheadAttention(8, heads, **options).eval()
    tiled = convert_attention(float_mha, tiler())
    assert isinstance(tiled, nn.MultiheadAttention) and tiled.in_proj_weight is None
    bool_mask = torch.rand(tgt, src) < 0.3
    bool_mask[:, 0] = False  # every query keeps a key
    padding = torch.zeros(batch, src, dtype=torch.bool)
    padding[1, 4:] = True
    masks = [
        {},
        {"attn_mask": bool_mask},
        {"attn_mask": torch.randn(tgt, src)},
        {"attn_mask": torch.randn(batch * heads, tgt, src)},
        {"key_padding_mask": padding},
        {"key_padding_mask": padding, "attn_mask": bool_mask},
    ]
    query, key, value = _mha_inputs(options, batch, tgt, src)
    for mask, need_weights, average in itertools.product(masks, (True, False), (True, False)):
        kwargs = dict(mask, need_weights=need_weights, average_attn_weights=average)
        with torch.no_grad():
            expected, expected_weights = float_mha(query, key, value, **kwargs)
            got, got_weights = tiled(query, key, value, **kwargs)
        assert got.shape == expected.shape and rel_err(got, expected) < 1e-5, (mask.keys(), need_weights)
        if need_weights:
            assert got_weights.shape == expected_weights.shape
            assert rel_err(got_weights, expected_weights) < 1e-5
        else:
            assert got_weights is None and expected_weights is None


def test_attention_self_attention_causal_and_unbatched():
    torch.manual_seed(3)
    float_mha = nn.MultiheadAttention(8, 4, batch_first=True).eval()
    tiled = convert_attention(float_mha, tiler())
    (x,) = _mha_inputs({"batch_first": True}, 2, 5, 5, self_attention=True)[:1]
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    for need_weights in (True, False):
        with torch.no_grad():
            expected = float_mha(x, x, x, attn_mask=causal, is_causal=True, need_weights=need_weights)[0]
            got = tiled(x, x, x, attn_mask=causal, is_causal=True, need_weights=need_weights)[0]
        assert rel_err(got, expected) < 1e-5
    with torch.no_grad():  # unbatched (L, E), with a per-head 3-D mask
        mask = torch.randn(4, 5, 5)
        u = x[0]
        assert rel_err(tiled(u, u, u, attn_mask=mask)[0], float_mha(u, u, u, attn_mask=mask)[0]) < 1e-5


@pytest.mark.tiles_may_idle  # forwards that stop at bad input
def test_attention_bad_input_is_a_clear_error():
    tiled = convert_attention(nn.MultiheadAttention(8, 4, batch_first=True), tiler())
    x = torch.randn(2, 5, 8)
    with pytest.raises(RuntimeError, match="is_causal"):
        tiled(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match="features"):
        tiled(x[..., :7], x, x)
    with pytest.raises(ValueError, match="key_padding_mask"):
        tiled(x, x, x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="MultiheadAttention"):
        convert_attention(nn.Linear(2, 2), tiler())


def test_attention_dropout_in_train_mode_and_straight_through_gradients():
    torch.manual_seed(4)
    float_mha = nn.MultiheadAttention(8, 2, dropout=0.5, kdim=6, vdim=6)
    tiled = convert_attention(float_mha, tiler())
    assert tiled.training
    query, key, value = _mha_inputs({"kdim": 6, "vdim": 6}, 3, 4, 5)
    torch.manual_seed(0)
    dropped = tiled(query, key, value)[0]
    torch.manual_seed(1)
    assert not torch.allclose(dropped, tiled(query, key, value)[0]), "dropout draws a new mask per call"
    float_mha.eval(), tiled.eval()
    grads = []
    for module in (float_mha, tiled):
        q = query.clone().requires_grad_(True)
        out, weights = module(q, key, value)
        (out.square().sum() + weights.square().sum()).backward()
        grads.append(q.grad)
    assert rel_err(grads[1], grads[0]) < 1e-5
    pairs = [
        (tiled.q_proj.weight.grad, float_mha.q_proj_weight.grad),
        (tiled.k_proj.weight.grad, float_mha.k_proj_weight.grad),
        (tiled.v_proj.weight.grad, float_mha.v_proj_weight.grad),
        (tiled.out_proj.weight.grad, float_mha.out_proj.weight.grad),
        (tiled.v_proj.bias.grad, float_mha.in_proj_bias.grad[16:]),
    ]
    for mine, theirs in pairs:
        assert mine is not None and rel_err(mine, theirs) < 1e-5


def _encoder(batch_first=True, norm_first=False):
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.1, batch_first=batch_first)
    layer.norm_first = norm_first
    return nn.TransformerEncoder(layer, num_layers=2, norm=nn.LayerNorm(16))


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_equals_float_in_eval_no_grad_and_uses_every_tile(batch_first):
    torch.manual_seed(5)
    model = _encoder(batch_first).eval()
    tiled = convert(model)
    x = torch.randn(3, 7, 16) if batch_first else torch.randn(7, 3, 16)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, 5:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(7)
    for kwargs in ({}, {"src_key_padding_mask": padding}, {"mask": causal, "is_causal": True}):
        guard = TileCalls(tiled)
        with torch.no_grad():  # the case where torch's fused fast path would read the float weights
            got, expected = tiled(x, **kwargs), model(x, **kwargs)
        assert not guard.unused(), f"skipped tiles: {guard.unused()}"
        assert all(n == 1 for n in guard.calls.values())
        keep = ~padding.T.unsqueeze(-1) if batch_first is False else ~padding.unsqueeze(-1)
        keep = keep if "src_key_padding_mask" in kwargs else torch.ones_like(keep)
        assert rel_err(got * keep, expected * keep) < 1e-5
    n_tiled = sum(isinstance(m, TiledLinear) for m in tiled.modules())
    assert n_tiled == 2 * 6  # q, k, v, out, linear1, linear2 per layer


def test_transformer_decoder_with_masks_equals_float():
    torch.manual_seed(6)
    layer = nn.TransformerDecoderLayer(16, 2, dim_feedforward=24, dropout=0.0, batch_first=True)
    model = nn.TransformerDecoder(layer, num_layers=2).eval()
    tiled = convert(model)
    tgt, memory = torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    memory_padding = torch.zeros(2, 6, dtype=torch.bool)
    memory_padding[1, 4:] = True
    kwargs = {
        "tgt_mask": nn.Transformer.generate_square_subsequent_mask(5),
        "tgt_is_causal": True,
        "memory_key_padding_mask": memory_padding,
    }
    guard = TileCalls(tiled)
    with torch.no_grad():
        assert rel_err(tiled(tgt, memory, **kwargs), model(tgt, memory, **kwargs)) < 1e-5
    assert not guard.unused()
    full = nn.Transformer(16, 2, 1, 1, dim_feedforward=24, dropout=0.0, batch_first=True).eval()
    with torch.no_grad():
        assert (
            rel_err(
                convert(full)(memory, tgt, tgt_mask=kwargs["tgt_mask"]), full(memory, tgt, tgt_mask=kwargs["tgt_mask"])
            )
            < 1e-5
        )
    model.train(), tiled.train()  # train mode (no dropout): the same function, with gradients
    assert rel_err(tiled(tgt, memory, **kwargs).detach(), model(tgt, memory, **kwargs).detach()) < 1e-5


def test_default_chip_encoder_has_the_noise_of_a_tiled_linear():
    torch.manual_seed(7)
    chip = DEFAULT
    model = _encoder().eval()
    x = torch.randn(8, 10, 16)
    with torch.no_grad():
        encoder_err = rel_err(convert(model, chip)(x), model(x))
        linear = model.layers[0].linear1
        h = torch.randn(80, 16)
        linear_err = rel_err(tiler(chip)(linear.weight, linear.bias, "l")(h), linear(h))
    assert encoder_err > 0, "the chip was skipped"
    assert 0.1 < encoder_err / linear_err < 10, (encoder_err, linear_err)


def test_estimate_counts_attention_products_as_digital():
    torch.manual_seed(8)
    model = _encoder().eval()
    tiled = convert(model, DEFAULT)
    batch, length, embed = 2, 6, 16
    energy = crossbar.estimate(tiled, torch.randn(batch, length, embed))
    by_name = {row.name: row for row in energy.layers}
    attention = by_name["layers.0.self_attn"]
    assert attention.placement == "digital"
    assert attention.ops == pytest.approx(2 * 2 * length * length * embed)  # Q K^T and A V, per inference
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        assert by_name[f"layers.1.self_attn.{proj}"].placement == "analog"


# ---------------------------------------------------------------------------------------------- recurrent

RNN_OPTIONS = [
    {},
    {"num_layers": 2, "bidirectional": True},
    {"num_layers": 2, "batch_first": True, "bias": False},
    {"bidirectional": True, "batch_first": True},
]


def _recurrent_cases():
    yield from itertools.product((nn.LSTM, nn.GRU, nn.RNN), RNN_OPTIONS)
    yield nn.RNN, {"nonlinearity": "relu", "num_layers": 2, "bidirectional": True}
    yield nn.LSTM, {"proj_size": 3, "num_layers": 2, "bidirectional": True}
    yield nn.LSTM, {"proj_size": 4, "batch_first": True}


def _states(float_rnn, batch):
    layers = float_rnn.num_layers * (2 if float_rnn.bidirectional else 1)
    h0 = torch.randn(layers, batch, float_rnn.proj_size or float_rnn.hidden_size)
    if isinstance(float_rnn, nn.LSTM):
        return h0, torch.randn(layers, batch, float_rnn.hidden_size)
    return h0


def _flat(result):
    output, state = result
    output = output.data if isinstance(output, nn.utils.rnn.PackedSequence) else output
    return [output, *(state if isinstance(state, tuple) else (state,))]


@pytest.mark.parametrize(("mode", "options"), list(_recurrent_cases()))
def test_recurrent_equals_torch_in_every_option(mode, options):
    torch.manual_seed(len(options))
    float_rnn = mode(5, 6, **options).eval()
    tiled = convert_recurrent(float_rnn, tiler())
    batch, length = 4, 7
    batch_first = options.get("batch_first", False)
    x = torch.randn(batch, length, 5) if batch_first else torch.randn(length, batch, 5)
    lengths = torch.tensor([7, 3, 5, 1])
    hx = _states(float_rnn, batch)
    inputs = [
        (x,),
        (x, hx),
        (pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False), hx),
        (pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False),),
        ((x[0] if batch_first else x[:, 0]),),  # unbatched (L, H_in)
    ]
    for args in inputs:
        guard = TileCalls(tiled)
        with torch.no_grad():
            expected, got = _flat(float_rnn(*args)), _flat(tiled(*args))
        assert not guard.unused()
        for a, b in zip(got, expected, strict=True):
            assert a.shape == b.shape and rel_err(a, b) < 1e-5
    steps = {name: n for name, n in guard.calls.items() if name.startswith("hh_")}
    assert all(n == length for n in steps.values()), "one tiled call per step"
    assert all(n == 1 for name, n in guard.calls.items() if name.startswith("ih_")), "all steps in one call"


@pytest.mark.parametrize("cell", [nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_recurrent_cells_equal_torch(cell):
    torch.manual_seed(9)
    float_cell = cell(5, 6).eval()
    tiled = convert_recurrent(float_cell, tiler())
    x = torch.randn(3, 5)
    hx = (torch.randn(3, 6), torch.randn(3, 6)) if cell is nn.LSTMCell else torch.randn(3, 6)
    relu = convert_recurrent(nn.RNNCell(5, 6, nonlinearity="relu", bias=False), tiler())
    with torch.no_grad():
        for args in ((x,), (x, hx), (x[0],)):
            expected, got = float_cell(*args), tiled(*args)
            pairs = zip(got, expected, strict=True) if cell is nn.LSTMCell else [(got, expected)]
            for a, b in pairs:
                assert a.shape == b.shape and rel_err(a, b) < 1e-5
    relu_float = nn.RNNCell(5, 6, nonlinearity="relu", bias=False)
    relu_float.load_state_dict({"weight_ih": relu.ih.weight, "weight_hh": relu.hh.weight})
    with torch.no_grad():
        assert rel_err(relu(x), relu_float(x)) < 1e-5


@pytest.mark.tiles_may_idle  # forwards that stop at bad input
def test_recurrent_bad_states_are_clear_errors():
    tiled = convert_recurrent(nn.LSTM(5, 6, num_layers=2), tiler())
    x = torch.randn(7, 3, 5)
    with pytest.raises(ValueError, match="h0 has shape"):
        tiled(x, (torch.zeros(1, 3, 6), torch.zeros(2, 3, 6)))
    with pytest.raises(ValueError, match=r"\(h0, c0\)"):
        tiled(x, torch.zeros(2, 3, 6))
    with pytest.raises(ValueError, match="features"):
        tiled(torch.randn(7, 3, 4))
    with pytest.raises(TypeError, match="nn.RNN"):
        convert_recurrent(nn.Linear(2, 2), tiler())


def test_lstm_gradients_straight_through_equal_float_gradients():
    torch.manual_seed(10)
    float_rnn = nn.LSTM(5, 6, num_layers=2, bidirectional=True, batch_first=True, proj_size=3)
    tiled = convert_recurrent(float_rnn, tiler())
    x = torch.randn(2, 4, 5, requires_grad=True)
    float_rnn(x)[0].square().sum().backward()
    grad_x = x.grad.clone()
    x.grad = None
    tiled(x)[0].square().sum().backward()
    assert rel_err(x.grad, grad_x) < 1e-5
    for kind in ("ih_l1_reverse", "hh_l0", "hr_l1"):
        assert rel_err(getattr(tiled, kind).weight.grad, getattr(float_rnn, f"weight_{kind}").grad) < 1e-5
    assert rel_err(tiled.hh_l0.bias.grad, float_rnn.bias_hh_l0.grad) < 1e-5


def test_estimate_counts_recurrent_gates():
    torch.manual_seed(11)
    model = nn.Sequential()
    model.rnn = nn.GRU(5, 6, bidirectional=True)
    tiled = convert(model, DEFAULT)
    length, batch = 7, 2
    energy = crossbar.estimate(tiled, torch.randn(length, batch, 5), batch_size=batch)
    by_name = {row.name: row for row in energy.layers}
    assert by_name["rnn"].placement == "digital" and by_name["rnn"].energy["digital"] > 0
    assert {"rnn.ih_l0", "rnn.hh_l0", "rnn.ih_l0_reverse", "rnn.hh_l0_reverse"} <= set(by_name)
    # every hidden-to-hidden product ran once per step and sequence: 2 MACs per weight use
    assert by_name["rnn.hh_l0"].ops == pytest.approx(2 * length * 18 * 6)


def test_bare_lstm_compiles_and_the_report_lists_every_matrix():
    torch.manual_seed(12)
    lstm = nn.LSTM(5, 6, bidirectional=True, proj_size=2)
    compiled = crossbar.compile(lstm, "ideal")
    x = torch.randn(4, 3, 5)
    with torch.no_grad():
        assert rel_err(compiled(x)[0], lstm(x)[0]) < 1e-5
    rows = {row.name: row for row in crossbar.report(compiled).layers}
    matrices = {f"{kind}_l0{suffix}" for kind in ("ih", "hh", "hr") for suffix in ("", "_reverse")}
    assert matrices <= set(rows) and all(rows[name].placement == "analog" for name in matrices)
    (own,) = [row for row in rows.values() if row.kind == "TiledRecurrent"]
    assert own.placement == "digital" and "gates" in own.reason
    assert rows["hr_l0"].shape == (2, 6) and rows["hh_l0"].shape == (24, 2)
    placed = crossbar.report(crossbar.compile(nn.Sequential(lstm), "ideal", digital=["0"])).layers
    assert {row.name for row in placed if row.placement == "digital" and row.shape} == {f"0.{m}" for m in matrices}
    one = crossbar.report(crossbar.compile(nn.Sequential(lstm), "ideal", digital={"0.hh_l0": {"weight_bits": 4}}))
    assert [row.name for row in one.layers if row.placement == "digital" and row.shape] == ["0.hh_l0"]
    with pytest.raises(crossbar.ConfigError, match="no module named '0.hh_l9'"):
        crossbar.compile(nn.Sequential(lstm), "ideal", digital=["0.hh_l9"])


def test_float64_models_compute_on_float32_tiles():
    torch.manual_seed(13)
    attention = nn.MultiheadAttention(8, 2).double().eval()
    gru = nn.GRU(4, 5).double()
    x, y = torch.randn(5, 3, 8, dtype=torch.float64), torch.randn(6, 2, 4, dtype=torch.float64)
    mask = torch.rand(5, 5) < 0.3
    mask[:, 0] = False
    with torch.no_grad():
        got = convert_attention(attention, tiler())(x, x, x, attn_mask=mask)[0]
        assert got.dtype == torch.float32 and rel_err(got, attention(x, x, x, attn_mask=mask)[0]) < 1e-5
        assert rel_err(convert_recurrent(gru, tiler())(y)[0], gru(y)[0]) < 1e-5


def test_calibration_of_a_matrix_used_every_step_sees_every_step():
    torch.manual_seed(14)
    chip = DEFAULT.replace(dac={"mode": "calibrated"}, adc={"mode": "calibrated"})
    rnn = nn.RNN(4, 8, nonlinearity="relu", bias=False)
    x = torch.randn(12, 3, 4)
    x[6:] *= 0.01  # the early steps drive the state much harder than the last ones
    compiled = crossbar.compile(rnn, chip, calibration_inputs=x)
    states = []
    hook = compiled.hh_l0.register_forward_pre_hook(lambda mod, args: states.append(args[0]))
    with torch.no_grad():
        compiled(x)
    hook.remove()
    every_step = torch.cat(states).abs().numpy()
    expected = np.percentile(every_step, chip.adc.calibration_percentile)
    assert compiled.hh_l0.tiles[0].dac_range == pytest.approx(expected, rel=0.05)
    last_step_only = np.percentile(states[-1].abs().numpy(), chip.adc.calibration_percentile)
    assert abs(last_step_only - expected) > 0.1 * expected, "the test must tell the two apart"
