"""Importers from lab formats into the measurement schema, and ``convert`` (input file -> HDF5 file).

Formats (``FORMATS``):

- ``csv``: a long-form CSV with a header naming the columns ``cell, target_conductance, time, conductance``
  (SI units: S, s; other columns are ignored). ``time`` is the nominal time after programming of each read,
  shared by the cells; every cell has one target. Reads at the earliest time form the programming group.
- ``relaxation``: a technology folder of Levy et al.'s RRAM-Relaxation-Master-Model data
  (``../shared/data/rram-relaxation/techC``, ``tests/data/rram-relaxation/techB``), or one relaxation file in
  such a folder: ``relaxdata*.tsv.gz`` beside ``settings.json``. The table is tab-separated without header,
  seven columns addr, time (s, measured), r (ohm), g (S), gi (S, read right after programming), range (level
  index), timept (nominal time, s). Level k was programmed by write-verify into the window
  [k, k + 1) g_max / W, so its target is the window centre (k + 1/2) g_max / W; ``settings.json`` gives
  ``gmax`` (S, required), ``levels`` (W, optional, default 32) and ``times`` (nominal read times, s,
  optional: rows at other times are skipped and counted). Levels above W - 1 (cells programmed above g_max)
  and any number of levels and times are kept. ``techc-relaxation`` is the same importer (its old name).
- ``techa-read-noise``: the time series ``tsdata.min.tsv.gz`` of the same data set: one row per cell,
  range (level index), index offset, then the reads (S) at ``fs`` Hz from ``settings.json``.

Input files are opened read-only; ``convert`` writes its output atomically.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from calibration.schema import Measurements, Programming, ReadNoise, Relaxation, SchemaError, write

CSV_COLUMNS = ("cell", "target_conductance", "time", "conductance")
MAX_DISTINCT_TIMES = 1000  # a long-form CSV must use nominal times shared by the cells
LEVY_LEVELS = 32  # write-verify windows of the Levy data: g_max / 32 wide (settings.json "levels" overrides)
LEVY_COLUMNS = ("addr", "time", "r", "g", "gi", "range", "timept")
LEVEL_CHECK_TOLERANCE = 0.01  # share of rows whose range may disagree with int(gi / g_max * W)


def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else path.open("r", newline="")


def _licence(path: Path) -> str:
    """First line and copyright line of a LICENSE file next to the input or one folder up, else ''."""
    for folder in (path.parent, path.parent.parent):
        candidate = folder / "LICENSE"
        if candidate.is_file():
            lines = [line.strip() for line in candidate.read_text().splitlines() if line.strip()]
            copyright_line = next((line for line in lines if line.lower().startswith("copyright")), "")
            return f"{lines[0]} ({copyright_line})" if copyright_line else lines[0]
    return ""


def _levy_file(path: Path, importer: str, keys: tuple[str, ...]) -> tuple[dict, list[float], dict]:
    """Metadata of a file of the RRAM-Relaxation-Master-Model data, the numbers ``keys`` of its settings.json
    and the whole settings."""
    settings_path = path.parent / "settings.json"
    if not settings_path.is_file():
        raise SchemaError(f"{path}: no settings.json next to it (it gives {', '.join(keys)})")
    try:
        settings = json.loads(settings_path.read_text())
        values = [float(settings[key]) for key in keys]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{settings_path}: needs numbers {', '.join(keys)} ({type(exc).__name__}: {exc})") from None
    metadata = {
        "technology": path.parent.name,
        "source": f"{path.parent.name}/{path.name} (RRAM-Relaxation-Master-Model data, A. Levy)",
        "licence": _licence(path),
        "importer": importer,
    }
    return metadata, values, settings


def _pivot(cells: np.ndarray, targets: np.ndarray, times: np.ndarray, conductance: np.ndarray, where: str):
    """Long-form rows -> (cell ids (N,), targets (N,), times (T,), conductance (N, T) with NaN where unmeasured)."""
    cell_ids, cell_index = np.unique(cells, return_inverse=True)
    time_values, time_index = np.unique(times, return_inverse=True)
    if time_values.size > MAX_DISTINCT_TIMES:
        raise SchemaError(
            f"{where}: {time_values.size} distinct times; use nominal times shared by the cells "
            f"(at most {MAX_DISTINCT_TIMES})"
        )
    if time_values[0] < 0:
        raise SchemaError(f"{where}: negative time {time_values[0]!r} s (times are after programming)")
    target = np.full(cell_ids.size, np.nan)
    target[cell_index] = targets
    if not np.array_equal(target[cell_index], targets):
        bad = cell_ids[cell_index[target[cell_index] != targets][0]]
        raise SchemaError(f"{where}: cell {bad} has more than one target_conductance")
    table = np.full((cell_ids.size, time_values.size), np.nan)
    table[cell_index, time_index] = conductance
    if np.count_nonzero(np.isfinite(table)) != conductance.size:
        raise SchemaError(f"{where}: a cell is read more than once at the same time")
    return cell_ids, target, time_values, table


def _programming_from(relaxation: Relaxation) -> Programming:
    """The programming group: each cell's read at the earliest time it was read."""
    first = np.argmax(np.isfinite(relaxation.conductance), axis=1)
    rows = np.arange(relaxation.cell.size)
    return Programming(
        cell=relaxation.cell,
        target_conductance=relaxation.target_conductance,
        conductance=relaxation.conductance[rows, first],
        time=relaxation.time[first],
    )


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def import_csv(path: str | os.PathLike) -> Measurements:
    """A long-form CSV (see module docstring). g_max is set to the largest target (``convert`` can override it)."""
    path = Path(path)
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in CSV_COLUMNS if name not in header]
        if missing:
            raise SchemaError(f"{path}: header lacks column(s) {', '.join(missing)} (found {header})")
        columns = [header.index(name) for name in CSV_COLUMNS]
        rows = [[_float(row[i]) if i < len(row) else math.nan for i in columns] for row in reader if row]
    data = np.asarray(rows, dtype=np.float64).reshape(-1, len(CSV_COLUMNS))
    finite = np.all(np.isfinite(data), axis=1)
    if not finite.any():
        raise SchemaError(f"{path}: no row with four finite numbers")
    data = data[finite]
    if np.any(data[:, 0] != np.round(data[:, 0])):
        raise SchemaError(f"{path}: column cell must hold integer cell ids")
    cells, target, times, table = _pivot(data[:, 0].astype(np.int64), data[:, 1], data[:, 2], data[:, 3], str(path))
    relaxation = Relaxation(cell=cells, target_conductance=target, time=times, conductance=table)
    skipped = {"csv: rows with a missing or non-numeric value": int(np.sum(~finite))} if not finite.all() else {}
    return Measurements(
        technology=path.stem,
        g_max=float(np.max(target)),
        source=path.name,
        licence=_licence(path),
        importer="csv",
        programming=_programming_from(relaxation),
        relaxation=relaxation if times.size > 1 else None,
        skipped=skipped,
    )


def _load_tsv(path: Path, columns: int) -> np.ndarray:
    try:
        with _open_text(path) as handle:
            data = np.loadtxt(handle, delimiter="\t", ndmin=2)
    except (ValueError, OSError, EOFError) as exc:
        raise SchemaError(f"{path}: not a readable tab-separated table of numbers ({exc})") from exc
    if data.shape[1] < columns or data.shape[0] == 0:
        raise SchemaError(f"{path}: expected at least {columns} columns and one row, got shape {data.shape}")
    return data


def relaxation_file(path: Path) -> Path:
    """The relaxation table of a technology folder (its one ``relaxdata*.tsv.gz``), or ``path`` if a file."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise SchemaError(f"{path}: no such file or folder")
    found = sorted([*path.glob("relaxdata*.tsv.gz"), *path.glob("relaxdata*.tsv")])
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise SchemaError(f"{path}: needs exactly one relaxdata*.tsv(.gz) (found {names}); pass the file instead")
    return found[0]


def _settings_times(path: Path, settings: dict) -> tuple[int, np.ndarray | None]:
    """Optional ``levels`` (write-verify windows per g_max) and ``times`` (s) of the settings.json beside path."""
    levels = settings.get("levels", LEVY_LEVELS)
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise SchemaError(f"{path.parent / 'settings.json'}: levels must be a positive integer (got {levels!r})")
    times = settings.get("times")
    if times is None:
        return levels, None
    try:
        times = np.asarray(times, dtype=np.float64)
    except (TypeError, ValueError):
        times = np.full(1, np.nan)
    if times.ndim != 1 or times.size == 0 or not np.all(np.isfinite(times)) or np.any(times < 0):
        raise SchemaError(f"{path.parent / 'settings.json'}: times must be a list of non-negative seconds")
    return levels, times


def import_relaxation(path: str | os.PathLike) -> Measurements:
    """A relaxation table of the Levy data, any technology (see module docstring): cells at nominal times."""
    path = relaxation_file(Path(path))
    metadata, (g_max,), settings = _levy_file(path, "relaxation", ("gmax",))
    windows, settings_times = _settings_times(path, settings)
    data = _load_tsv(path, len(LEVY_COLUMNS))
    if data.shape[1] != len(LEVY_COLUMNS):
        raise SchemaError(f"{path}: {data.shape[1]} columns; expected {len(LEVY_COLUMNS)}: {', '.join(LEVY_COLUMNS)}")
    skipped = {}
    finite = np.all(np.isfinite(data[:, [0, 3, 4, 5, 6]]), axis=1)
    if not finite.all():
        skipped["relaxation: rows with a non-finite value"] = int(np.sum(~finite))
    data = data[finite]
    if settings_times is not None:
        listed = np.isin(data[:, 6], settings_times)
        if not listed.all():
            skipped["relaxation: rows at a time not in settings.json times"] = int(np.sum(~listed))
        data = data[listed]
    if data.shape[0] == 0:
        raise SchemaError(f"{path}: no row with finite addr, g, gi, range and timept")
    level = data[:, 5]
    if np.any(level != np.round(level)) or np.any(level < 0):
        raise SchemaError(f"{path}: column range must hold non-negative integer level indices")
    disagree = np.mean(np.floor(data[:, 4] / g_max * windows) != level)
    if disagree > LEVEL_CHECK_TOLERANCE:
        raise SchemaError(
            f"{path}: the range column disagrees with int(gi / gmax * {windows}) on {disagree:.0%} of the rows; "
            f"is gmax ({g_max:g} S) or levels ({windows}) in settings.json right?"
        )
    target = (level + 0.5) * g_max / windows
    cells, target, times, table = _pivot(data[:, 0].astype(np.int64), target, data[:, 6], data[:, 3], str(path))
    relaxation = Relaxation(cell=cells, target_conductance=target, time=times, conductance=table)
    return Measurements(
        **metadata, g_max=g_max, programming=_programming_from(relaxation), relaxation=relaxation, skipped=skipped
    )


def import_techa_read_noise(path: str | os.PathLike) -> Measurements:
    """The techA read-noise time series (see module docstring): a few cells, 10^5 reads each at 400 Hz."""
    path = Path(path)
    metadata, (g_max, rate), _ = _levy_file(path, "techa-read-noise", ("gmax", "fs"))
    data = _load_tsv(path, 3)
    reads = data[:, 2:]
    level = data[:, 0]
    return Measurements(
        **metadata,
        g_max=g_max,
        read_noise=ReadNoise(
            cell=np.arange(reads.shape[0], dtype=np.int64),
            target_conductance=(level + 0.5) * g_max / LEVY_LEVELS,
            sample_rate=rate,
            conductance=reads,
        ),
    )


FORMATS: dict[str, Callable[[Path], Measurements]] = {
    "csv": import_csv,
    "relaxation": import_relaxation,
    "techc-relaxation": import_relaxation,  # the old name, kept
    "techa-read-noise": import_techa_read_noise,
}


FOLDER_FORMATS = ("relaxation", "techc-relaxation")  # formats that also take a technology folder


def load(fmt: str, path: str | os.PathLike) -> Measurements:
    """Import ``path`` in format ``fmt`` (one of ``FORMATS``) into measurements (nothing written)."""
    if fmt not in FORMATS:
        raise SchemaError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    path = Path(path)
    if not (path.is_file() or (fmt in FOLDER_FORMATS and path.is_dir())):
        raise SchemaError(f"{path}: no such file" + (" or folder" if fmt in FOLDER_FORMATS else ""))
    try:
        return FORMATS[fmt](path)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise SchemaError(f"{path}: cannot be read as {fmt} ({type(exc).__name__}: {exc})") from exc


def convert(fmt: str, path: str | os.PathLike, output: str | os.PathLike, **metadata: object) -> Measurements:
    """Import ``path`` and write the HDF5 file ``output`` atomically. ``metadata`` overrides fields
    of the result (technology, g_max, source, licence, read_voltage, temperature) where not None."""
    if Path(output).resolve() == Path(path).resolve():
        raise SchemaError(f"{output}: the output would overwrite the input")
    g_max = metadata.get("g_max")
    if g_max is not None and not (isinstance(g_max, (int, float)) and math.isfinite(g_max) and g_max > 0):
        raise SchemaError(f"g_max: must be a positive number of siemens (got {g_max!r})")
    measurements = load(fmt, path)
    for name, value in metadata.items():
        if value is not None:
            setattr(measurements, name, value)
    write(output, measurements)
    return measurements
