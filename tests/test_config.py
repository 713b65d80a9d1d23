"""ChipConfig: presets, JSON round trip, and clear errors naming the field."""

import json

import pytest

from crossbar import ChipConfig, ConfigError


def test_presets_load_and_round_trip(tmp_path):
    assert {"default", "ideal"} <= set(ChipConfig.presets())
    for name in ChipConfig.presets():
        chip = ChipConfig.preset(name)
        path = tmp_path / f"{name}.json"
        chip.to_json(path)
        assert ChipConfig.from_json(path) == chip
        assert json.loads(path.read_text())["name"] == name


def test_dataclass_defaults_are_the_default_preset():
    assert ChipConfig(name="default") == ChipConfig.preset("default")


def test_ideal_preset_is_ideal_and_default_is_not():
    assert ChipConfig.preset("ideal").is_ideal
    assert not ChipConfig.preset("default").is_ideal
    assert ChipConfig.preset("default").tile.rows == 256


@pytest.mark.parametrize(
    ("section", "change", "field"),
    [
        ("dac", {"bits": 0}, "dac.bits"),
        ("adc", {"bits": 40}, "adc.bits"),
        ("adc", {"bits": 1.5}, "adc.bits"),
        ("tile", {"rows": 0}, "tile.rows"),
        ("tile", {"cols": -3}, "tile.cols"),
        ("mapping", {"g_min": 3e-5, "g_max": 2e-5}, "mapping.g_min"),
        ("mapping", {"g_min": -1e-6}, "mapping.g_min"),
        ("device", {"t_inference": -1.0}, "device.t_inference"),
        ("device", {"model": "flash"}, "device.model"),
        ("adc", {"mode": "magic"}, "adc.mode"),
        ("read_noise", {"output_std": float("nan")}, "read_noise.output_std"),
        ("adc", {"unknown_knob": 1}, "adc.unknown_knob"),
    ],
)
def test_impossible_values_name_the_field(section, change, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        ChipConfig.preset("default").replace(**{section: change})


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*default.*ideal"):
        ChipConfig.preset("nope")


def test_bad_json_file_is_a_clear_error(tmp_path):
    path = tmp_path / "chip.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ChipConfig.from_json(path)
    path.write_text(json.dumps({"adc": {"bits": 8}, "gpu": True}))
    with pytest.raises(ConfigError, match="gpu"):
        ChipConfig.from_json(path)


def test_to_json_leaves_no_temp_file_and_readable_permissions(tmp_path):
    path = tmp_path / "chip.json"
    ChipConfig.preset("default").to_json(path)
    assert [p.name for p in tmp_path.iterdir()] == ["chip.json"]
    assert path.stat().st_mode & 0o044  # readable by others, not mkstemp's 0600
