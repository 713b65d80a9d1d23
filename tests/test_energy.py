"""Energy and latency (crossbar.estimate): closed forms, scaling laws, the digital_ops protocol, bad input."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import crossbar
from crossbar import ChipConfig, ConfigError, EnergyConstants
from crossbar.energy.laws import (
    digital_prices,
    line_cap_per_cell,
    murmann_adc_energy,
    register_clock_energy,
    sar_adc_energy,
    sar_power_coefficients,
)

# Exact physics, no noise: every programmed conductance is on target.
CLEAN = {"device": {"model": "none"}, "read_noise": {"output_std": 0.0}, "wires": {"r_wl": 0.0, "r_bl": 0.0}}


def clean_chip(**changes):
    sections = {k: dict(v) for k, v in CLEAN.items()}
    for section, values in changes.items():
        sections.setdefault(section, {}).update(values)
    return ChipConfig.preset("default").replace(**sections)


def linear(weight, bias=None):
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return nn.Sequential(layer)


def random_case(rows=256, cols=256, batch=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.rand(cols, rows, generator=generator) * 2 - 1
    x = torch.rand(batch, rows, generator=generator) * 2 - 1
    return weight, x


def components(report):
    return report.by_component


def test_array_energy_is_sum_v2_g_t_of_the_codes_on_the_word_lines():
    """All weights +1: every G+ is g_max and every G- is g_min = 0, so E = v^2 g_max cols sum_i t_i."""
    rows, cols, batch = 64, 32, 3
    codes = torch.randint(-127, 128, (batch, rows), generator=torch.Generator().manual_seed(1)).float()
    x = codes / 127.0
    model = linear(torch.ones(cols, rows))
    for encoding in ("pwm", "voltage", "bit_serial"):
        chip = clean_chip(dac={"mode": "fixed", "input_range": 1.0}, energy={"input_encoding": encoding})
        report = crossbar.estimate(crossbar.compile(model, chip), x)
        e, v, g = chip.energy, chip.mapping.v_read, chip.mapping.g_max
        k = codes.abs().numpy().astype(np.int64)
        if encoding == "pwm":
            seconds = k / e.clock_hz
        elif encoding == "voltage":
            seconds = (k / 127.0) ** 2 * e.integration_time
        else:
            seconds = np.array([[bin(int(c)).count("1") for c in row] for row in k]) * e.integration_time
        expected = v**2 * g * cols * seconds.sum() / batch
        assert components(report)["array"] == pytest.approx(expected, rel=1e-6), encoding


def test_supply_array_law_prices_the_conducted_charge_at_vdd_and_changes_nothing_else():
    """array_law "supply": E = vdd sum V G t; with all weights +1, vdd v_read g_max cols sum_i (V_i / v_read) t_i."""
    rows, cols, batch = 64, 32, 3
    codes = torch.randint(-127, 128, (batch, rows), generator=torch.Generator().manual_seed(2)).float()
    model = linear(torch.ones(cols, rows))
    for encoding in ("pwm", "voltage", "bit_serial"):
        reports = {}
        for law in ("cells", "supply"):
            chip = clean_chip(
                dac={"mode": "fixed", "input_range": 1.0}, energy={"input_encoding": encoding, "array_law": law}
            )
            reports[law] = crossbar.estimate(crossbar.compile(model, chip), codes / 127.0)
        e, v, g = chip.energy, chip.mapping.v_read, chip.mapping.g_max
        k = codes.abs().numpy().astype(np.int64)
        if encoding == "pwm":
            charge_seconds = k / e.clock_hz
        elif encoding == "voltage":
            charge_seconds = k / 127.0 * e.integration_time
        else:
            charge_seconds = np.array([[bin(int(c)).count("1") for c in row] for row in k]) * e.integration_time
        cells, supply = components(reports["cells"]), components(reports["supply"])
        assert supply["array"] == pytest.approx(e.vdd * v * g * cols * charge_seconds.sum() / batch, rel=1e-6)
        if encoding != "voltage":  # every pulse is at v_read: the ratio is exactly vdd / v_read
            assert supply["array"] / cells["array"] == pytest.approx(e.vdd / v, rel=1e-9), encoding
        for other in ("dac", "adc", "digital", "movement"):
            assert supply[other] == pytest.approx(cells[other], rel=1e-12), (encoding, other)
        assert reports["supply"].latency == pytest.approx(reports["cells"].latency, rel=1e-12)


def test_doubling_adc_bits_changes_only_the_adc_term_by_its_law():
    weight, x = random_case()
    reports = {}
    for law in ("sar", "murmann"):
        for bits in (4, 8):
            chip = clean_chip(adc={"bits": bits}, energy={"adc_law": law})
            reports[law, bits] = crossbar.estimate(crossbar.compile(linear(weight), chip), x)
    node = ChipConfig.preset("default").energy.node_nm
    a, b = sar_power_coefficients(node)
    sar_ratio = (8 * a + b) * 9 / ((4 * a + b) * 5)  # NeuroSim: (a bits + b) (bits + 1) steps
    murmann_ratio = 10 ** (6.02059991 * 4 / 10)  # same sample rate, SNDR up by 4 x 6.02 dB: 256x
    for law, ratio in (("sar", sar_ratio), ("murmann", murmann_ratio)):
        low, high = components(reports[law, 4]), components(reports[law, 8])
        assert high["adc"] / low["adc"] == pytest.approx(ratio, rel=1e-9), law
        assert high["adc_front"] / low["adc_front"] == pytest.approx(2.0, rel=1e-9)  # per resolved bit
        registers = 256 * 8 + 256 * 8, 256 * 8 + 256 * 4  # input codes per row, output codes per column
        assert high["control"] / low["control"] == pytest.approx(registers[0] / registers[1], rel=1e-9)
        for other in ("dac", "drivers", "array", "digital", "psum", "movement"):
            assert high[other] == pytest.approx(low[other], rel=1e-12), (law, other)
        assert reports[law, 8].latency == pytest.approx(reports[law, 4].latency, rel=1e-12)
    assert sar_adc_energy(8, 14.0, EnergyConstants()) == pytest.approx((0.4710 * 8 + 1.9529) * 1e-6 * 9e-9)
    assert murmann_adc_energy(8, 1e6, EnergyConstants()) == pytest.approx(
        1 / (2 * 10 ** ((180.14159078904734 - 49.92) / 10)), rel=1e-3
    )


def test_doubling_the_tiles_doubles_adc_array_and_output_work_only():
    """Duplicating the output rows puts the same conductances on a second tile column."""
    weight, x = random_case(rows=200, cols=256, batch=4)
    chip = clean_chip()
    one = crossbar.estimate(crossbar.compile(linear(weight), chip), x)
    two = crossbar.estimate(crossbar.compile(linear(torch.cat([weight, weight])), chip), x)
    assert crossbar.report(crossbar.compile(linear(torch.cat([weight, weight])), chip)).analog_tiles == 2
    c1, c2 = components(one), components(two)
    assert c2["dac"] == pytest.approx(c1["dac"], rel=1e-12)  # the same inputs drive both tiles
    for term in ("adc", "array", "digital", "drivers", "adc_front", "control"):
        assert c2[term] == pytest.approx(2 * c1[term], rel=1e-6), term
    assert c1["psum"] == c2["psum"] == 0  # one row block: no partial sums to buffer
    price = digital_prices(chip.energy, EnergyConstants())["memory_bytes"]
    assert c2["movement"] - c1["movement"] == pytest.approx(256 * 2 * price, rel=1e-9)  # 256 more fp16 outputs
    # tiles work in parallel: the analog time is the same, only the digital lanes take longer
    lanes = chip.energy.digital_lanes * chip.energy.clock_hz
    assert two.latency - one.latency == pytest.approx(2 * 256 / lanes, rel=1e-9)
    assert two.ops == pytest.approx(2 * one.ops)


def test_batch_changes_totals_not_energy_per_inference():
    weight, x = random_case(batch=5)
    analog = crossbar.compile(linear(weight, torch.zeros(256)), clean_chip())
    one = crossbar.estimate(analog, x)
    two = crossbar.estimate(analog, torch.cat([x, x]))
    assert two.batch == 2 * one.batch
    for term, value in components(one).items():
        assert components(two)[term] == pytest.approx(value, rel=1e-12), term
    assert two.latency == pytest.approx(one.latency, rel=1e-12)
    assert two.energy * two.batch == pytest.approx(2 * one.energy * one.batch, rel=1e-12)


def test_counts_follow_the_data_zero_inputs_cost_no_pulses_or_array_energy():
    weight, x = random_case(batch=2)
    analog = crossbar.compile(linear(weight), clean_chip(dac={"mode": "fixed"}))
    busy = components(crossbar.estimate(analog, x))
    idle = components(crossbar.estimate(analog, torch.zeros_like(x)))
    assert idle["array"] == 0 and busy["array"] > 0
    assert busy["dac"] == idle["dac"] == 0  # PWM pulses are word-line drives, priced under drivers
    assert busy["drivers"] > idle["drivers"] > 0  # word lines follow the data; bit lines are charged every read
    assert idle["adc"] == busy["adc"] and idle["adc_front"] == busy["adc_front"]  # every column is converted


class Gate(nn.Module):
    """y = x * sigmoid(x) in its own code, declared through the digital_ops protocol."""

    def forward(self, x):
        return x * torch.sigmoid(x)

    def digital_ops(self, inputs, output):
        n = inputs[0].numel()
        return {"mul": n, "nonlinear": n, "memory_bytes": 2 * n}


def test_digital_ops_protocol_prices_a_modules_own_work():
    weight, x = random_case(rows=64, cols=32, batch=3)
    model = nn.Sequential(linear(weight)[0], Gate(), nn.LayerNorm(32), nn.Tanh())
    chip = clean_chip()
    report = crossbar.estimate(crossbar.compile(model, chip), x)
    prices = digital_prices(chip.energy, EnergyConstants())
    rows = {layer.name: layer for layer in report.layers}
    n = 32  # per inference
    assert rows["1"].energy["digital"] == pytest.approx(n * (prices["mul"] + prices["nonlinear"]), rel=1e-12)
    assert rows["1"].energy["movement"] == pytest.approx(2 * n * prices["memory_bytes"], rel=1e-12)
    assert rows["2"].energy["digital"] == pytest.approx(
        3 * n * (prices["add"] + prices["mul"]) + prices["nonlinear"], rel=1e-12
    )
    assert rows["3"].energy["digital"] == pytest.approx(n * prices["nonlinear"], rel=1e-12)
    assert prices["nonlinear"] == pytest.approx(4 * (prices["add"] + prices["mul"]))


def test_bad_digital_ops_and_unknown_modules_are_reported():
    class Bad(Gate):
        def digital_ops(self, inputs, output):
            return {"flops": 3}

    class Negative(Gate):
        def digital_ops(self, inputs, output):
            return {"mul": -1}

    class Mystery(nn.Module):
        def forward(self, x):
            return x.cumsum(-1)

    weight, x = random_case(rows=16, cols=8, batch=2)
    for module, message in ((Bad(), "1.digital_ops: unknown key 'flops'"), (Negative(), "mul must be a finite")):
        analog = crossbar.compile(nn.Sequential(linear(weight)[0], module), clean_chip())
        with pytest.raises(ValueError, match=message):
            crossbar.estimate(analog, x)
    analog = crossbar.compile(nn.Sequential(linear(weight)[0], Mystery()), clean_chip())
    with pytest.warns(UserWarning, match=r"not priced.*1 \(Mystery\)"):
        crossbar.estimate(analog, x)


def test_bad_input_gets_a_clear_error(tmp_path):
    weight, x = random_case(rows=16, cols=8, batch=2)
    analog = crossbar.compile(linear(weight), clean_chip())
    for bad in (-1e-12, float("nan"), 0.0):
        with pytest.raises(ConfigError, match="energy constant dac_1bit: must be a finite positive"):
            crossbar.estimate(analog, x, constants={"dac_1bit": bad})
    with pytest.raises(ConfigError, match="energy constant nope: unknown"):
        crossbar.estimate(analog, x, constants={"nope": 1.0})
    with pytest.raises(ValueError, match="was not compiled"):
        crossbar.estimate(linear(weight), x)
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        ChipConfig.preset("nope")
    with pytest.raises(ConfigError, match="energy.adc_law: must be one of sar, murmann"):
        ChipConfig.preset("default").replace(energy={"adc_law": "flash"})
    with pytest.raises(ConfigError, match="energy.array_law: must be one of cells, supply"):
        ChipConfig.preset("default").replace(energy={"array_law": "regulated"})
    with pytest.raises(ConfigError, match="energy.vdd: the supply .* cannot deliver the read voltage"):
        ChipConfig.preset("default").replace(energy={"array_law": "supply", "vdd": 0.1})
    with pytest.raises(ConfigError, match="energy.adc_share: must be a positive integer"):
        ChipConfig.preset("default").replace(energy={"adc_share": 0})
    with pytest.raises(ValueError, match="no dac.bits / adc.bits"):
        crossbar.estimate(crossbar.compile(linear(weight), "ideal"), x)
    report = crossbar.estimate(analog, x)
    with pytest.raises(ValueError, match="use a .png, .pdf or .svg"):
        report.plot(tmp_path / "energy.txt")
    report.plot(tmp_path / "energy.png")
    assert (tmp_path / "energy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["energy.png"]  # no temporary file left behind


def test_report_dict_and_table_agree():
    weight, x = random_case(rows=300, cols=40, batch=2)
    model = nn.Sequential(linear(weight)[0], nn.ReLU())
    report = crossbar.estimate(crossbar.compile(model, clean_chip()), x)
    data = report.to_dict()
    assert data["energy_per_inference_J"] == pytest.approx(sum(layer["total_J"] for layer in data["layers"]))
    assert data["tops_per_watt"] == pytest.approx(data["ops_per_inference"] / data["energy_per_inference_J"] / 1e12)
    assert data["ops_per_inference"] == 2 * 300 * 40
    text = str(report)
    assert "TOPS/W" in text and "ReLU" in text and "total" in text
    assert math.isfinite(report.tops) and report.tops > 0


def pwm_codes(rows, batch, seed):
    return torch.randint(-127, 128, (batch, rows), generator=torch.Generator().manual_seed(seed)).float()


def test_driver_energy_is_line_capacitance_and_grows_with_line_length():
    """Each PWM pulse swings a word line of tile.cols cells (C vdd^2); each read brings a bit line of tile.rows
    cells to v_read (C v_read vdd). A twice-longer word line (same weights, wider tile) doubles the first."""
    rows, cols, batch = 64, 128, 3
    codes = pwm_codes(rows, batch, 3)
    model = linear(torch.rand(cols, rows, generator=torch.Generator().manual_seed(4)) * 2 - 1)
    constants = EnergyConstants()
    found = {}
    for tile_cols in (128, 256):
        chip = clean_chip(dac={"mode": "fixed", "input_range": 1.0}, tile={"rows": 64, "cols": tile_cols})
        found[tile_cols] = components(crossbar.estimate(crossbar.compile(model, chip), codes / 127.0))["drivers"]
        e, c = chip.energy, line_cap_per_cell(chip.energy.node_nm, constants)
        pulses = float(np.count_nonzero(codes.numpy()))
        word = pulses * tile_cols * c * e.vdd**2
        bit = batch * cols * rows * c * chip.mapping.v_read * e.vdd
        assert found[tile_cols] == pytest.approx((word + bit) / batch, rel=1e-9)
    word_128 = found[128] - batch * cols * rows * c * chip.mapping.v_read * e.vdd / batch
    assert found[256] - found[128] == pytest.approx(word_128, rel=1e-9)  # the word-line part doubled


def test_clocking_grows_with_cycles_and_nothing_else_but_the_array_does():
    """Voltage encoding: a read lasts integration_time, i.e. integration_time x clock_hz clock cycles, each
    clocking every input and output register bit of the tile."""
    weight, x = random_case(rows=64, cols=32, batch=2)
    reports = {}
    for t in (1e-8, 2e-8):
        chip = clean_chip(energy={"input_encoding": "voltage", "integration_time": t})
        reports[t] = components(crossbar.estimate(crossbar.compile(linear(weight), chip), x))
    short, long = reports[1e-8], reports[2e-8]
    assert long["control"] / short["control"] == pytest.approx(2.0, rel=1e-9)
    registers = 256 * 8 + 256 * 8  # one padded 256 x 256 tile
    cycles = round(1e-8 * chip.energy.clock_hz)
    assert short["control"] == pytest.approx(
        cycles * registers * register_clock_energy(chip.energy, EnergyConstants()), rel=1e-9
    )
    assert long["array"] == pytest.approx(2 * short["array"], rel=1e-9)
    for other in ("dac", "drivers", "adc", "adc_front", "digital", "psum", "movement"):
        assert long[other] == pytest.approx(short[other], rel=1e-12), other


def test_current_readout_adds_a_mirrored_copy_and_row_blocks_buffer_partial_sums():
    weight, x = random_case(rows=300, cols=40, batch=2)  # two row blocks on 256-row tiles
    found = {}
    for readout in ("charge", "current"):
        chip = clean_chip(energy={"array_law": "supply", "readout": readout})
        found[readout] = components(crossbar.estimate(crossbar.compile(linear(weight), chip), x))
    copy = EnergyConstants().sense_mirror_ratio * found["charge"]["array"]  # supply law: vdd x the charge
    assert found["current"]["adc_front"] - found["charge"]["adc_front"] == pytest.approx(copy, rel=1e-9)
    price = digital_prices(chip.energy, EnergyConstants())["memory_bytes"]
    assert found["charge"]["psum"] == pytest.approx(2 * 40 * 1 * 2 * price, rel=1e-9)  # fp16 partial sums


def test_capacitive_array_charges_every_cell_of_every_read_column():
    weight, x = random_case(rows=64, cols=32, batch=2)
    chip = clean_chip(energy={"array_law": "capacitive"})
    found = components(crossbar.estimate(crossbar.compile(linear(weight), chip), x))
    c = line_cap_per_cell(chip.energy.node_nm, EnergyConstants())
    assert found["array"] == pytest.approx(32 * 256 * c * chip.energy.vdd**2, rel=1e-9)  # padded 256-row tile
    chip = clean_chip(energy={"array_law": "capacitive", "cell_capacitance": 2e-15})
    found = components(crossbar.estimate(crossbar.compile(linear(weight), chip), x))
    assert found["array"] == pytest.approx(32 * 256 * (c + 2e-15) * chip.energy.vdd**2, rel=1e-9)
    with pytest.raises(ConfigError, match="energy.cell_capacitance: must be a finite non-negative"):
        clean_chip(energy={"cell_capacitance": -1e-15})
    with pytest.raises(ConfigError, match="energy.readout: must be one of charge, current"):
        clean_chip(energy={"readout": "voltage"})


class TwoHeads(nn.Module):
    """Two layers reading the same activation (a gated MLP's gate and up projections, or q and k)."""

    def __init__(self, a: nn.Linear, b: nn.Linear) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=-1)


def test_an_activation_read_by_two_layers_is_converted_once_like_one_wider_layer():
    """The DAC codes of an input depend on the input and the DAC settings alone: two layers reading the same
    activation cost one conversion and two sets of word-line drives, exactly as one layer with both outputs."""
    from crossbar.energy.counting import ActivityCounter

    chip = clean_chip()
    weight, x = random_case(rows=300, cols=512, batch=5, seed=4)
    wide = linear(weight)
    a, b = nn.Linear(300, 256, bias=False), nn.Linear(300, 256, bias=False)
    with torch.no_grad():
        a.weight.copy_(weight[:256])
        b.weight.copy_(weight[256:])
    one = ActivityCounter(crossbar.compile(wide, chip), chip).run((x,))["0"]
    two = ActivityCounter(crossbar.compile(TwoHeads(a, b), chip), chip).run((x,))
    assert one.dac_actions > 0
    assert two["a"].dac_actions + two["b"].dac_actions == one.dac_actions
    assert two["b"].dac_actions == 0  # the second reader reuses the first's codes
    assert two["a"].row_pulses + two["b"].row_pulses == one.row_pulses
    # a different activation (x and -x have the same codes' magnitudes but are not the same conversion)
    apart = ActivityCounter(crossbar.compile(nn.Sequential(a), chip), chip).run((x,))["0"]
    assert apart.dac_actions == two["a"].dac_actions


def test_self_attention_converts_its_input_once_for_q_k_and_v():
    from crossbar.energy.counting import ActivityCounter

    chip = clean_chip()
    attention = nn.MultiheadAttention(64, 4, batch_first=True)
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(2))
    memory = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(3))

    class Self(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attention

        def forward(self, x, memory=None):
            source = x if memory is None else memory
            return self.attn(x, source, source, need_weights=False)[0]

    compiled = crossbar.compile(Self(), chip)
    own = ActivityCounter(compiled, chip).run((x,))
    cross = ActivityCounter(compiled, chip).run((x, memory))
    q = own["attn.q_proj"].dac_actions
    assert q > 0 and own["attn.k_proj"].dac_actions == own["attn.v_proj"].dac_actions == 0
    assert cross["attn.q_proj"].dac_actions == q  # the query converted alone
    assert cross["attn.k_proj"].dac_actions > 0 and cross["attn.v_proj"].dac_actions == 0  # memory once
