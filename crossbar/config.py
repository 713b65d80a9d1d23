"""Chip configuration: plain dataclasses, validated on construction, with a JSON round trip.

Units are SI: conductances in siemens, voltages in volts, times in seconds. Quantities that are ratios
(ADC full scale, noise standard deviations) are stated in the normalised units documented on each field:
inputs are scaled to [-1, 1] by the DAC and weights to [-1, 1] by the mapping, so one "cell current" is
the current of one fully-on differential pair at full input, ``v_read * (g_max - g_min)`` amperes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from crossbar.errors import ConfigError
from crossbar.fileio import write_text_atomic

MIN_BITS = 2
MAX_BITS = 24
INPUT_ENCODINGS = ("pwm", "bit_serial", "voltage")
ADC_LAWS = ("sar", "murmann")
ARRAY_LAWS = ("cells", "supply", "capacitive")
READOUTS = ("charge", "current")
DIGITAL_FORMATS = ("int8", "int32", "fp16", "fp32")
DEVICE_MODELS = ("none", "pcm", "reram_wan2022", "hermes", "profile")


def _check(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field_name}: {message}")


def _check_bits(bits: int | None, field_name: str) -> None:
    if bits is None:
        return
    _check(
        isinstance(bits, int) and not isinstance(bits, bool) and MIN_BITS <= bits <= MAX_BITS,
        field_name,
        f"must be an integer from {MIN_BITS} to {MAX_BITS} (signed levels), or null for none (got {bits!r})",
    )


def _check_positive(value: float, field_name: str, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    bound = "non-negative" if allow_zero else "positive"
    _check(ok, field_name, f"must be a finite {bound} number (got {value!r})")


def _check_count(value: int, field_name: str) -> None:
    """A positive integer (not a bool): tile sizes, ADC sharing, digital lanes."""
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        field_name,
        f"must be a positive integer (got {value!r})",
    )


def _check_choice(value: str, choices: tuple[str, ...], field_name: str) -> None:
    _check(value in choices, field_name, f"must be one of {', '.join(choices)} (got {value!r})")


@dataclass(frozen=True)
class TileConfig:
    """Size of one crossbar array: ``rows`` inputs (word lines) by ``cols`` outputs (bit lines)."""

    rows: int = 256
    cols: int = 256

    def __post_init__(self) -> None:
        for name in ("rows", "cols"):
            _check_count(getattr(self, name), f"tile.{name}")


@dataclass(frozen=True)
class DACConfig:
    """Input digital-to-analog conversion.

    ``bits`` signed bits (``None``: no quantization). The input vector x is divided by a scale s and
    clipped to [-1, 1], then rounded to ``2**(bits-1) - 1`` levels per sign; the line voltage is
    ``v_read * x / s``. ``mode`` picks s: ``"dynamic"`` is max|x| of each input vector's slice on each
    tile row block (noise management per tile, as aihwkit's ABS_MAX); ``"fixed"`` is ``input_range``;
    ``"calibrated"`` is the ``adc.calibration_percentile`` of |x| over sample inputs given to
    ``crossbar.compile(..., calibration_inputs=...)``.
    """

    bits: int | None = 8
    mode: str = "dynamic"
    input_range: float = 1.0

    def __post_init__(self) -> None:
        _check_bits(self.bits, "dac.bits")
        _check_choice(self.mode, ("dynamic", "fixed", "calibrated"), "dac.mode")
        _check_positive(self.input_range, "dac.input_range")


@dataclass(frozen=True)
class ADCConfig:
    """Output analog-to-digital conversion, one conversion per tile column per input vector.

    ``bits`` signed bits (``None``: no quantization): ``2**(bits-1) - 1`` levels per sign over
    [-full_scale, full_scale]; values outside are clipped. ``mode`` picks the full scale, in cell
    currents (see module docstring):
    ``"fixed"``: ``full_scale`` for every column;
    ``"weights"``: per tile column, ``weights_fraction * sum_i |w_ij|`` of the programmed normalised
    weights (1.0 never clips an input in [-1, 1]);
    ``"calibrated"``: per tile column, ``calibration_margin`` times the ``calibration_percentile`` of
    |tile output| over sample inputs given to ``crossbar.compile(..., calibration_inputs=...)``.
    """

    bits: int | None = 8
    mode: str = "fixed"
    full_scale: float = 12.0
    weights_fraction: float = 1.0
    calibration_percentile: float = 99.99
    calibration_margin: float = 1.0

    def __post_init__(self) -> None:
        _check_bits(self.bits, "adc.bits")
        _check_choice(self.mode, ("fixed", "weights", "calibrated"), "adc.mode")
        _check_positive(self.full_scale, "adc.full_scale")
        _check_positive(self.weights_fraction, "adc.weights_fraction")
        _check(
            0 < self.calibration_percentile <= 100,
            "adc.calibration_percentile",
            f"must be in (0, 100] (got {self.calibration_percentile!r})",
        )
        _check_positive(self.calibration_margin, "adc.calibration_margin")


@dataclass(frozen=True)
class MappingConfig:
    """Weights to conductances.

    Each tile column is scaled so its largest |weight| maps to ``g_max`` (``weight_scaling="column"``) or
    the tile's largest |weight| does (``"tile"``). ``differential=True``: a pair per weight,
    G+ = g_min + max(w, 0) (g_max - g_min), G- likewise for -w, and the column current is I+ - I-.
    ``differential=False``: one device per weight around a reference conductance (g_min + g_max) / 2,
    subtracted digitally. ``v_read`` is the read voltage at full input, volts.
    """

    g_min: float = 0.0
    g_max: float = 25e-6
    differential: bool = True
    weight_scaling: str = "column"
    v_read: float = 0.2

    def __post_init__(self) -> None:
        _check_positive(self.g_min, "mapping.g_min", allow_zero=True)
        _check_positive(self.g_max, "mapping.g_max")
        _check(
            self.g_min < self.g_max,
            "mapping.g_min",
            f"must be below mapping.g_max (got g_min={self.g_min!r}, g_max={self.g_max!r})",
        )
        _check(isinstance(self.differential, bool), "mapping.differential", "must be true or false")
        _check_choice(self.weight_scaling, ("column", "tile"), "mapping.weight_scaling")
        _check_positive(self.v_read, "mapping.v_read")


@dataclass(frozen=True)
class DeviceConfig:
    """Device physics, delegated to an aihwkit inference noise model acting on conductances.

    ``model``: ``"pcm"`` (aihwkit PCMLikeNoiseModel), ``"reram_wan2022"`` (ReRamWan2022NoiseModel),
    ``"hermes"`` (HermesNoiseModel) or ``"none"`` (conductances exactly on target). The model draws, once
    per chip instance, the programming error and the drift (with the 1/f read noise aihwkit adds to it) at
    ``t_inference`` seconds after programming. The ``*_scale`` factors multiply aihwkit's own coefficients.
    ``drift_compensation``: a global per-tile gain, as aihwkit's GlobalDriftCompensation.
    ``reram_wan2022`` has no drift or read-noise coefficients: aihwkit redraws its conductances around the
    targets with the fit at ``t_inference`` (1, 86400 or 172800 s), scaled by ``prog_noise_scale``; its
    ``drift_scale`` and ``read_noise_scale`` are not used.
    ``"profile"``: a device profile fitted from measurements (``calibration``), named by ``profile``: a
    shipped preset (e.g. ``"techc"``) or the path of a profile JSON file. Validation here opens no file: the
    profile is loaded and checked (it exists, it is valid, it covers ``t_inference``) when a chip is programmed
    (``crossbar.device.noise_model``).
    ``profile`` is not used by the other models.
    The scales multiply its programming / relaxation std, drift exponents and read-noise std.
    """

    model: str = "pcm"
    t_inference: float = 3600.0
    drift_compensation: bool = True
    prog_noise_scale: float = 1.0
    drift_scale: float = 1.0
    read_noise_scale: float = 1.0
    profile: str | None = None

    def __post_init__(self) -> None:
        _check_choice(self.model, DEVICE_MODELS, "device.model")
        _check_positive(self.t_inference, "device.t_inference", allow_zero=True)
        _check(isinstance(self.drift_compensation, bool), "device.drift_compensation", "must be true or false")
        for name in ("prog_noise_scale", "drift_scale", "read_noise_scale"):
            _check_positive(getattr(self, name), f"device.{name}", allow_zero=True)
        if self.model == "profile":
            _check(
                isinstance(self.profile, str) and self.profile != "",
                "device.profile",
                f"model 'profile' needs a profile preset name or JSON path (got {self.profile!r})",
            )


@dataclass(frozen=True)
class ReadNoiseConfig:
    """Noise drawn afresh on every forward pass, referred to the layer output (one draw per output).

    ``output_std``: Gaussian noise per tile output in cell currents (aihwkit's ``out_noise``); the tiles of a
    column add their noise, so output j of input b gets std ``output_std * sqrt(sum_r (d_rj s_br)**2)`` with
    d the digital (weight) scale of tile column (r, j) and s the DAC scale of row block r.
    ``cell_std``: exact per-cell read noise, each device's conductance fluctuating with std
    ``cell_std * G``; its output variance ``sum_i sigma_ij**2 x_i**2`` costs one extra matmul.
    Both are added after the ADC (referred to the output); 0 disables either.
    """

    output_std: float = 0.04
    cell_std: float = 0.0

    def __post_init__(self) -> None:
        _check_positive(self.output_std, "read_noise.output_std", allow_zero=True)
        _check_positive(self.cell_std, "read_noise.cell_std", allow_zero=True)


@dataclass(frozen=True)
class WireConfig:
    """Wire resistance of the arrays, ohms per segment (one cell pitch), for the IR-drop model.

    ``r_wl``: word-line segment (also driver to first cell); ``r_bl``: bit-line segment (also last cell to
    the sense amplifier). 0 for ideal wires. The default 1 ohm is an order-of-magnitude estimate for a copper
    line 50 nm wide and 100 nm high at a 100 nm cell pitch with size-effect resistivity 4.5e-8 ohm m
    (R = rho * pitch / (w * h) = 0.9 ohm); see docs/irdrop.md for how the error scales with it.
    """

    r_wl: float = 1.0
    r_bl: float = 1.0

    def __post_init__(self) -> None:
        _check_positive(self.r_wl, "wires.r_wl", allow_zero=True)
        _check_positive(self.r_bl, "wires.r_bl", allow_zero=True)

    @property
    def ideal(self) -> bool:
        return self.r_wl == 0 and self.r_bl == 0


@dataclass(frozen=True)
class EnergyConfig:
    """What a chip's energy and latency depend on (``crossbar.estimate``; docs/energy.md).

    ``node_nm``: CMOS process node, nm; ``vdd``: supply, V (digital logic; the read current under ``"supply"``);
    ``clock_hz``: main clock, Hz.
    ``input_encoding``: how a DAC code reaches the word line: ``"pwm"`` (one pulse of ``v_read`` lasting
    |code| clock cycles), ``"bit_serial"`` (one read of ``integration_time`` per magnitude bit, results shifted
    and added digitally) or ``"voltage"`` (an amplitude DAC: ``v_read * code / L`` for ``integration_time``).
    ``integration_time``: one read, s (bit-serial and voltage encodings). ``adc_law``: ``"sar"`` (NeuroSim's
    SAR ADC) or ``"murmann"`` (the Murmann-survey bound, as CiMLoop's ADC model). ``array_law``: how the read
    current is priced: ``"cells"`` (sum V^2 G t, what the cells dissipate; the read voltage as an ideal source)
    or ``"supply"`` (``vdd`` times the charge the cells conduct, sum V G t: the read current drawn from the
    supply through the drivers that set the read voltage) or ``"capacitive"`` (a charge-domain array, e.g. SRAM
    cells with capacitors: every cell of a column is charged to ``vdd`` once per read, its share of the line
    capacitance plus ``cell_capacitance``, F, the cell's own capacitor; the cell currents are not priced).
    ``readout``: how a column is sensed: ``"charge"`` (the column charge is integrated or shared on a capacitor
    and converted: no second copy of it) or ``"current"`` (the front end works on a copy of the column current,
    drawn from ``vdd``: a current-controlled oscillator, a mirror into an integrator, a current-mode sense
    amplifier). ``adc_share``: columns that share one ADC.
    ``digital_format``: number format of the digital units (``int8``, ``int32``, ``fp16``, ``fp32``);
    ``digital_lanes``: digital operations per clock cycle. ``source``: where the values come from.
    """

    node_nm: float = 14.0
    vdd: float = 0.8
    clock_hz: float = 1e9
    input_encoding: str = "pwm"
    integration_time: float = 1e-8
    adc_law: str = "sar"
    array_law: str = "cells"
    readout: str = "charge"
    cell_capacitance: float = 0.0
    adc_share: int = 1
    digital_format: str = "fp16"
    digital_lanes: int = 256
    source: str = "crossbar defaults: a 14 nm chip with HERMES-like periphery (docs/energy.md)"

    def __post_init__(self) -> None:
        for name in ("node_nm", "vdd", "clock_hz", "integration_time"):
            _check_positive(getattr(self, name), f"energy.{name}")
        _check_positive(self.cell_capacitance, "energy.cell_capacitance", allow_zero=True)
        _check_choice(self.input_encoding, INPUT_ENCODINGS, "energy.input_encoding")
        _check_choice(self.adc_law, ADC_LAWS, "energy.adc_law")
        _check_choice(self.array_law, ARRAY_LAWS, "energy.array_law")
        _check_choice(self.readout, READOUTS, "energy.readout")
        _check_choice(self.digital_format, DIGITAL_FORMATS, "energy.digital_format")
        for name in ("adc_share", "digital_lanes"):
            _check_count(getattr(self, name), f"energy.{name}")
        _check(isinstance(self.source, str), "energy.source", "must be a string")


_SECTIONS = {
    "tile": TileConfig,
    "dac": DACConfig,
    "adc": ADCConfig,
    "mapping": MappingConfig,
    "device": DeviceConfig,
    "read_noise": ReadNoiseConfig,
    "wires": WireConfig,
    "energy": EnergyConfig,
}


def _section_from_dict(name: str, cls: type, data: Any) -> Any:
    _check(isinstance(data, dict), name, f"must be an object (got {type(data).__name__})")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    _check(not unknown, f"{name}.{unknown[0]}" if unknown else name, f"unknown field; known: {sorted(known)}")
    return cls(**data)


@dataclass(frozen=True)
class ChipConfig:
    """Everything that defines a simulated chip; see each section's docstring for units."""

    name: str = "custom"
    tile: TileConfig = field(default_factory=TileConfig)
    dac: DACConfig = field(default_factory=DACConfig)
    adc: ADCConfig = field(default_factory=ADCConfig)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    read_noise: ReadNoiseConfig = field(default_factory=ReadNoiseConfig)
    wires: WireConfig = field(default_factory=WireConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            _check(isinstance(getattr(self, name), cls), name, f"must be a {cls.__name__}")
        if self.energy.array_law == "supply":
            _check(
                self.energy.vdd >= self.mapping.v_read,
                "energy.vdd",
                f"the supply ({self.energy.vdd} V) cannot deliver the read voltage mapping.v_read "
                f"({self.mapping.v_read} V) under array_law 'supply'",
            )

    @property
    def is_ideal(self) -> bool:
        """True when the chip computes the exact float result (no quantization, no noise)."""
        return (
            self.dac.bits is None
            and self.adc.bits is None
            and self.device.model == "none"
            and self.read_noise.output_std == 0
            and self.read_noise.cell_std == 0
            and self.wires.ideal
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChipConfig:
        _check(isinstance(data, dict), "chip", "must be a JSON object")
        unknown = sorted(set(data) - set(_SECTIONS) - {"name"})
        _check(not unknown, unknown[0] if unknown else "chip", f"unknown field; known: name, {', '.join(_SECTIONS)}")
        sections = {k: _section_from_dict(k, c, data[k]) for k, c in _SECTIONS.items() if k in data}
        return cls(name=str(data.get("name", "custom")), **sections)

    def to_json(self, path: str | os.PathLike) -> None:
        """Write the config as readable JSON, atomically (a temp file renamed into place)."""
        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ChipConfig:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data)

    @classmethod
    def preset(cls, name: str) -> ChipConfig:
        """A named chip shipped with crossbar (see ``ChipConfig.presets()``)."""
        names = cls.presets()
        _check(name in names, "preset", f"unknown preset {name!r}; available: {', '.join(names)}")
        text = resources.files("crossbar.presets").joinpath(f"{name}.json").read_text()
        return cls.from_dict(json.loads(text))

    @staticmethod
    def presets() -> list[str]:
        files = resources.files("crossbar.presets").iterdir()
        return sorted(p.name[: -len(".json")] for p in files if p.name.endswith(".json"))

    @classmethod
    def load(cls, name_or_path: str | os.PathLike) -> ChipConfig:
        """A preset name or the path of a JSON file."""
        if str(name_or_path).endswith(".json") or Path(name_or_path).is_file():
            return cls.from_json(name_or_path)
        return cls.preset(str(name_or_path))

    def replace(self, **sections: dict[str, Any]) -> ChipConfig:
        """A copy with some fields of some sections changed, e.g. ``chip.replace(adc={"bits": 6})``."""
        data = self.to_dict()
        for section, changes in sections.items():
            _check(section in _SECTIONS or section == "name", section, "unknown section")
            if section == "name":
                data["name"] = changes
            else:
                data[section].update(changes)
        return ChipConfig.from_dict(data)
