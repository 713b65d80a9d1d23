"""Read a measurement file and validate it against the schema, naming everything that is missing or malformed.

The file is opened read-only. Rows with non-finite values are skipped and counted in ``Measurements.skipped``;
every structural problem (a missing group or dataset, a wrong ``units`` attribute, a wrong shape, an empty
dataset, a non-numeric dataset) and every value outside the physical range of its unit
(``calibration.schema.physical_problems``: conductances above 1 S or far below zero, times not increasing) is
collected and raised together in one ``SchemaError``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from calibration.schema import (
    DEVICE_DATASETS,
    ROOT_ATTRIBUTES,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    SECTION_DATASETS,
    Measurements,
    Programming,
    ReadNoise,
    Relaxation,
    SchemaError,
    physical_problems,
)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Checker:
    """Collects problems while reading datasets of one file."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def dataset(self, group: h5py.Group, name: str, unit: str, ndim: int, required: bool) -> np.ndarray | None:
        where = f"{group.name.rstrip('/')}/{name}"
        if name not in group:
            if required:
                self.problems.append(f"{where}: missing dataset")
            return None
        node = group[name]
        if not isinstance(node, h5py.Dataset):
            self.problems.append(f"{where}: is a group, expected a dataset")
            return None
        got = _text(node.attrs.get("units", "<none>"))
        if got != unit:
            self.problems.append(f"{where}: units attribute is {got!r}, expected {unit!r}")
        if node.dtype.kind not in "fiu":
            self.problems.append(f"{where}: holds {node.dtype} values, expected numbers")
            return None
        if node.ndim != ndim:
            self.problems.append(f"{where}: has {node.ndim} dimensions {node.shape}, expected {ndim}")
            return None
        if ndim > 0 and node.size == 0:
            self.problems.append(f"{where}: is empty")
            return None
        return np.asarray(node[()], dtype=np.int64 if name == "cell" else np.float64)

    def length(self, where: str, arrays: dict[str, np.ndarray | None], axis0: list[str], n: int) -> None:
        for name in axis0:
            array = arrays.get(name)
            if array is not None and array.shape[0] != n:
                self.problems.append(f"{where}/{name}: has {array.shape[0]} rows, expected {n} (one per cell)")


def _read_section(h5: h5py.File, section: str, check: _Checker) -> dict[str, np.ndarray | None] | None:
    if section not in h5:
        return None
    group = h5[section]
    if not isinstance(group, h5py.Group):
        check.problems.append(f"/{section}: is a dataset, expected a group")
        return None
    arrays = {name: check.dataset(group, name, *spec) for name, spec in SECTION_DATASETS[section].items()}
    cells = arrays["cell"]
    if cells is not None:
        rows = [name for name, (_, ndim, _) in SECTION_DATASETS[section].items() if ndim >= 1 and name != "cell"]
        if section == "relaxation":
            rows.remove("time")
        check.length(f"/{section}", arrays, rows, cells.shape[0])
        if np.unique(cells).size != cells.size:
            check.problems.append(f"/{section}/cell: cell ids are not unique")
    return arrays


def _check_relaxation_time(arrays: dict[str, np.ndarray | None], check: _Checker) -> None:
    time, conductance = arrays["time"], arrays["conductance"]
    if time is None:
        return
    if conductance is not None and conductance.shape[1] != time.shape[0]:
        check.problems.append(
            f"/relaxation/conductance: has {conductance.shape[1]} columns, expected {time.shape[0]} (one per time)"
        )


def _programming(arrays: dict[str, np.ndarray], skipped: dict[str, int]) -> Programming:
    keep = np.isfinite(arrays["target_conductance"]) & np.isfinite(arrays["conductance"]) & np.isfinite(arrays["time"])
    if not keep.all():
        skipped["programming: rows with a non-finite value"] = int(np.sum(~keep))
    return Programming(**{name: arrays[name][keep] for name in SECTION_DATASETS["programming"]})


def _relaxation(arrays: dict[str, np.ndarray], skipped: dict[str, int]) -> Relaxation:
    conductance = arrays["conductance"]
    finite = np.isfinite(conductance)
    keep = np.isfinite(arrays["target_conductance"]) & finite.any(axis=1)
    if not keep.all():
        skipped["relaxation: cells without a finite target or any finite read"] = int(np.sum(~keep))
    missing = int(np.sum(~finite[keep]))
    if missing:
        skipped["relaxation: reads not measured or non-finite (NaN)"] = missing
    return Relaxation(
        cell=arrays["cell"][keep],
        target_conductance=arrays["target_conductance"][keep],
        time=arrays["time"],
        conductance=np.where(finite, conductance, np.nan)[keep],
    )


def _read_noise(arrays: dict[str, np.ndarray], skipped: dict[str, int], check: _Checker) -> ReadNoise | None:
    rate = float(arrays["sample_rate"])
    if not (np.isfinite(rate) and rate > 0):
        check.problems.append(f"/read_noise/sample_rate: must be a positive number (got {rate!r})")
        return None
    conductance = arrays["conductance"]
    finite = np.isfinite(conductance)
    keep = np.isfinite(arrays["target_conductance"]) & (finite.sum(axis=1) >= 2)
    if not keep.all():
        skipped["read_noise: cells without a finite target or two finite reads"] = int(np.sum(~keep))
    if np.sum(~finite[keep]):
        skipped["read_noise: non-finite reads"] = int(np.sum(~finite[keep]))
    return ReadNoise(
        cell=arrays["cell"][keep],
        target_conductance=arrays["target_conductance"][keep],
        sample_rate=rate,
        conductance=np.where(finite, conductance, np.nan)[keep],
    )


def _root(h5: h5py.File, check: _Checker) -> dict[str, str]:
    attrs = {}
    for name in ROOT_ATTRIBUTES:
        if name not in h5.attrs:
            check.problems.append(f"/: missing attribute {name!r}")
        else:
            attrs[name] = _text(h5.attrs[name])
    if attrs.get("schema", SCHEMA_NAME) != SCHEMA_NAME:
        check.problems.append(f"/: attribute schema is {attrs['schema']!r}, expected {SCHEMA_NAME!r}")
    version = attrs.get("schema_version", str(SCHEMA_VERSION))
    if version != str(SCHEMA_VERSION):
        check.problems.append(f"/: schema_version {version} is not supported (this reader reads {SCHEMA_VERSION})")
    return attrs


def _read_open(h5: h5py.File) -> Measurements:
    check = _Checker()
    attrs = _root(h5, check)
    device: dict[str, float | None] = {}
    technology = ""
    if "device" not in h5 or not isinstance(h5["device"], h5py.Group):
        check.problems.append("/device: missing group")
    else:
        technology = _text(h5["device"].attrs.get("technology", ""))
        for name, spec in DEVICE_DATASETS.items():
            value = check.dataset(h5["device"], name, *spec)
            device[name] = None if value is None else float(value)
    sections = {name: _read_section(h5, name, check) for name in SECTION_DATASETS}
    if all(arrays is None for arrays in sections.values()):
        check.problems.append("/: no programming, relaxation or read_noise group (at least one is required)")
    if sections["relaxation"] is not None:
        _check_relaxation_time(sections["relaxation"], check)
    if check.problems:
        raise SchemaError("; ".join(check.problems))
    skipped: dict[str, int] = {}
    result = Measurements(
        technology=technology,
        g_max=float(device["g_max"]),
        source=attrs["source"],
        licence=attrs["licence"],
        read_voltage=device.get("read_voltage"),
        temperature=device.get("temperature"),
        importer=_text(h5.attrs.get("importer", "")),
        skipped=skipped,
    )
    if sections["programming"] is not None:
        result.programming = _programming(sections["programming"], skipped)
    if sections["relaxation"] is not None:
        result.relaxation = _relaxation(sections["relaxation"], skipped)
    if sections["read_noise"] is not None:
        result.read_noise = _read_noise(sections["read_noise"], skipped, check)
    for name in SECTION_DATASETS:
        data = getattr(result, name)
        if data is not None and data.cell.size == 0:
            check.problems.append(f"/{name}: no cell has finite data")
    check.problems += physical_problems(result)
    if check.problems:
        raise SchemaError("; ".join(check.problems))
    return result


def read(path: str | os.PathLike) -> Measurements:
    """Read and validate the measurement file at ``path`` (opened read-only; never modified)."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise SchemaError(f"{path}: not an HDF5 file")
    try:
        with h5py.File(path, "r") as h5:
            return _read_open(h5)
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from None
    except (OSError, RuntimeError, KeyError) as exc:  # h5py's errors for truncated or corrupt files
        raise SchemaError(f"{path}: unreadable HDF5 file, truncated or corrupt ({exc})") from exc
