"""The HDF5 schema for device measurements (version 1) and the in-memory form of one file.

Every dataset carries a ``units`` attribute with its SI unit ("S", "s", "Hz", "V", "K", or "1" for a count
or an index). Layout (``docs/calibration.md`` documents every entry):

/                      attrs: schema, schema_version, source, licence, importer
/device                attrs: technology
    g_max              ()               S   largest conductance of the device range (required)
    read_voltage       ()               V   optional
    temperature        ()               K   optional
/programming           optional: one read per cell right after programming
    cell               (N,)             1
    target_conductance (N,)             S
    conductance        (N,)             S
    time               (N,)             s   time after programming of the read
/relaxation            optional: conductance per cell over time (NaN = not measured at that time)
    cell               (N,)             1
    target_conductance (N,)             S
    time               (T,)             s   increasing, >= 0
    conductance        (N, T)           S
/read_noise            optional: repeated reads per cell
    cell               (N,)             1
    target_conductance (N,)             S
    sample_rate        ()               Hz
    conductance        (N, S)           S

At least one of programming, relaxation, read_noise is present.

Values must be physical for their declared unit (``physical_problems``): conductances at most MAX_CONDUCTANCE
(1 S) and at most FAR_ABOVE_G_MAX times g_max, and not below zero by more than the read-noise floor
NEGATIVE_READ_FLOOR x g_max; relaxation times strictly increasing. Both ``write`` and the reader enforce it, so
no importer can write, and no fit can read, conductances in microsiemens labelled siemens.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from crossbar.fileio import write_bytes_atomic

SCHEMA_NAME = "crossbar-device-measurements"
SCHEMA_VERSION = 1

# group -> dataset -> (unit, number of dimensions, required)
DEVICE_DATASETS = {"g_max": ("S", 0, True), "read_voltage": ("V", 0, False), "temperature": ("K", 0, False)}
SECTION_DATASETS = {
    "programming": {
        "cell": ("1", 1, True),
        "target_conductance": ("S", 1, True),
        "conductance": ("S", 1, True),
        "time": ("s", 1, True),
    },
    "relaxation": {
        "cell": ("1", 1, True),
        "target_conductance": ("S", 1, True),
        "time": ("s", 1, True),
        "conductance": ("S", 2, True),
    },
    "read_noise": {
        "cell": ("1", 1, True),
        "target_conductance": ("S", 1, True),
        "sample_rate": ("Hz", 0, True),
        "conductance": ("S", 2, True),
    },
}
ROOT_ATTRIBUTES = ("schema", "schema_version", "source", "licence")

# No memory device conducts 1 S (1 ohm); a value above it is in another unit (microsiemens labelled S).
MAX_CONDUCTANCE = 1.0  # S
# Reads of a device at or near its off state dip below zero by read noise and amplifier offset (the techC data:
# down to -0.3 % of g_max); lower than -NEGATIVE_READ_FLOOR x g_max is a sign or offset error, not noise.
NEGATIVE_READ_FLOOR = 0.05
# Reads above g_max happen (techC: up to 1.6 g_max); ten times g_max means the data and g_max disagree on units.
FAR_ABOVE_G_MAX = 10.0


class SchemaError(ValueError):
    """A measurement file that is not readable or does not follow the schema; the message says what and where."""


@dataclass
class Programming:
    """One read per cell after programming: arrays (N,), siemens and seconds."""

    cell: np.ndarray
    target_conductance: np.ndarray
    conductance: np.ndarray
    time: np.ndarray


@dataclass
class Relaxation:
    """Conductance (N, T) siemens of N cells at T times (s) after programming; NaN where not measured."""

    cell: np.ndarray
    target_conductance: np.ndarray
    time: np.ndarray
    conductance: np.ndarray


@dataclass
class ReadNoise:
    """Repeated reads (N, S) siemens of N cells at ``sample_rate`` Hz."""

    cell: np.ndarray
    target_conductance: np.ndarray
    sample_rate: float
    conductance: np.ndarray


@dataclass
class Measurements:
    """The contents of one measurement file. ``skipped``: what the reader or importer left out, with counts."""

    technology: str
    g_max: float
    source: str
    licence: str
    read_voltage: float | None = None
    temperature: float | None = None
    importer: str = ""
    programming: Programming | None = None
    relaxation: Relaxation | None = None
    read_noise: ReadNoise | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    def sections(self) -> list[str]:
        return [name for name in SECTION_DATASETS if getattr(self, name) is not None]


def _range_problems(where: str, values: np.ndarray, low: float, high: float, ceiling: str) -> list[str]:
    """Problems of the finite ``values`` of dataset ``where`` outside [low, high] siemens (``ceiling``: how the
    upper bound reads in a message)."""
    finite = values[np.isfinite(values)]
    problems = []
    if np.any(finite > high):
        above = finite[finite > high]
        problems.append(
            f"{where}: {above.size} value(s) above {ceiling} (largest {above.max():.3g} S); the schema's unit is "
            "siemens: are they in another unit (uS, mS), or is g_max wrong?"
        )
    if np.any(finite < low):
        below = finite[finite < low]
        problems.append(
            f"{where}: {below.size} value(s) below {low:.3g} S (lowest {below.min():.3g} S), beyond the read-noise "
            f"floor of {NEGATIVE_READ_FLOOR:.0%} of g_max below zero: a sign or offset error?"
        )
    return problems


def physical_problems(measurements: Measurements) -> list[str]:
    """What is outside the physical range of its declared unit (see the module docstring), each problem naming
    its dataset; empty when all is plausible."""
    g_max = float(measurements.g_max)
    problems = []
    high, floor, ceiling = MAX_CONDUCTANCE, 0.0, f"{MAX_CONDUCTANCE:g} S"
    if np.isfinite(g_max) and 0 < g_max <= MAX_CONDUCTANCE:
        floor = -NEGATIVE_READ_FLOOR * g_max
        if FAR_ABOVE_G_MAX * g_max < MAX_CONDUCTANCE:
            high = FAR_ABOVE_G_MAX * g_max
            ceiling = f"{FAR_ABOVE_G_MAX:g} x g_max = {high:.3g} S"
    else:
        problems.append(f"/device/g_max: must be a positive number of siemens up to {ceiling} (got {g_max!r})")
    for section in measurements.sections():
        data = getattr(measurements, section)
        for name, low in (("target_conductance", 0.0), ("conductance", floor)):
            values = np.asarray(getattr(data, name), dtype=np.float64)
            problems += _range_problems(f"/{section}/{name}", values, low, high, ceiling)
    if measurements.relaxation is not None:
        time = np.asarray(measurements.relaxation.time, dtype=np.float64)
        if not np.all(np.isfinite(time)) or np.any(time < 0) or np.any(np.diff(time) <= 0):
            problems.append("/relaxation/time: must be finite, non-negative and strictly increasing")
    if measurements.programming is not None:
        time = np.asarray(measurements.programming.time, dtype=np.float64)
        if np.any(time[np.isfinite(time)] < 0):
            problems.append("/programming/time: must be non-negative (seconds after programming)")
    return problems


def _dataset(group: h5py.Group, name: str, value: np.ndarray | float, unit: str) -> None:
    data = np.asarray(value)
    kwargs = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if data.ndim > 0 and data.size else {}
    group.create_dataset(name, data=data, **kwargs)
    group[name].attrs["units"] = unit


def to_bytes(measurements: Measurements) -> bytes:
    """The HDF5 file of ``measurements`` (schema version 1), built in memory."""
    if not measurements.sections():
        raise SchemaError("measurements: no programming, relaxation or read_noise data to write")
    problems = physical_problems(measurements)
    if problems:
        raise SchemaError("; ".join(problems))
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.attrs["schema"] = SCHEMA_NAME
        h5.attrs["schema_version"] = SCHEMA_VERSION
        h5.attrs["source"] = measurements.source
        h5.attrs["licence"] = measurements.licence
        h5.attrs["importer"] = measurements.importer
        device = h5.create_group("device")
        device.attrs["technology"] = measurements.technology
        for name, (unit, _, _) in DEVICE_DATASETS.items():
            value = getattr(measurements, name)
            if value is not None:
                _dataset(device, name, float(value), unit)
        for section, spec in SECTION_DATASETS.items():
            data = getattr(measurements, section)
            if data is None:
                continue
            group = h5.create_group(section)
            for name, (unit, _, _) in spec.items():
                _dataset(group, name, getattr(data, name), unit)
    return buffer.getvalue()


def write(path: str | os.PathLike, measurements: Measurements) -> None:
    """Write ``measurements`` to ``path`` atomically (a temporary file in the same folder, then a rename);
    SchemaError, and nothing written, when they are not physical (``physical_problems``)."""
    try:
        data = to_bytes(measurements)
    except SchemaError as exc:
        raise SchemaError(f"{path}: not written: {exc}") from None
    write_bytes_atomic(path, data)
