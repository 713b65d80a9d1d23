"""A sweep spec: the YAML or JSON file that names a grid, parsed and validated before any work starts.

```yaml
name: adc-bits                 # optional label stored with every row
workloads: [digits-mlp]        # registry names, "package.module:function" or "path/file.py:function"
chips: [default]               # preset names, chip JSON files (relative to the spec) or inline chip objects
parameters:                    # dotted chip fields -> values; the grid is their Cartesian product
  adc.bits: [4, 6, 8]
seeds: 10                      # chip instances 0..9, or an explicit list
```
"""

from __future__ import annotations

import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crossbar.config import ChipConfig, ConfigError
from crossbar.sweep.workloads import WorkloadRef, check_workload

TOP_LEVEL = ("name", "description", "workloads", "chips", "parameters", "seeds")
REQUIRED = ("workloads", "chips", "seeds")


class SpecError(ConfigError):
    """A sweep spec that cannot run; the message names the file and the entry."""


@dataclass(frozen=True)
class ChipEntry:
    """One chip of the grid: its label in the results (preset name, path as written, or inline name)."""

    label: str
    config: ChipConfig


@dataclass(frozen=True)
class SweepSpec:
    """A validated spec. ``parameters``: dotted chip field -> values, in file order."""

    name: str
    workloads: tuple[WorkloadRef, ...]
    chips: tuple[ChipEntry, ...]
    parameters: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    source: str = "<dict>"


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a spec file (``.yaml``/``.yml`` or ``.json``); raises SpecError naming the entry."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({exc})") from exc
    return parse_spec(data, base_dir=path.parent, source=str(path))


def parse_spec(data: Any, base_dir: str | os.PathLike = ".", source: str = "<dict>") -> SweepSpec:
    """Validate a spec already loaded into Python objects; relative files resolve against ``base_dir``."""

    def fail(entry: str, message: str) -> SpecError:
        return SpecError(f"{source}: {entry}: {message}")

    if not isinstance(data, dict):
        raise fail("spec", f"must be a mapping with keys {', '.join(REQUIRED)} (got {type(data).__name__})")
    unknown = sorted(map(str, set(data) - set(TOP_LEVEL)))
    if unknown:
        raise fail(str(unknown[0]), f"unknown key; known keys: {', '.join(TOP_LEVEL)}")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise fail(missing[0], "missing (required keys: " + ", ".join(REQUIRED) + ")")
    base_dir = Path(base_dir)
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise fail("name", f"must be a non-empty string (got {name!r})")
    workloads = tuple(_workloads(data["workloads"], base_dir, fail))
    chips = tuple(_chips(data["chips"], base_dir, fail))
    parameters = _parameters(data.get("parameters") or {}, fail)
    seeds = _seeds(data["seeds"], fail)
    return SweepSpec(name, workloads, chips, parameters, seeds, source)


def _non_empty_list(value: Any, entry: str, fail) -> list:
    if not isinstance(value, list):
        value = [value]
    if not value:
        raise fail(entry, "empty list: the grid would have no points")
    return value


def _workloads(value: Any, base_dir: Path, fail) -> list[WorkloadRef]:
    refs = []
    for i, item in enumerate(_non_empty_list(value, "workloads", fail)):
        entry = f"workloads[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or set(item) - {"name", "args"} or "name" not in item:
            raise fail(entry, f"must be a name or a mapping with keys name and args (got {item!r})")
        args = item.get("args") or {}
        if not isinstance(item["name"], str) or not isinstance(args, dict):
            raise fail(entry, "name must be a string and args a mapping")
        ref = WorkloadRef(item["name"], json.dumps(args, sort_keys=True), str(base_dir.resolve()))
        try:
            check_workload(ref)
        except (ConfigError, ImportError, TypeError) as exc:
            raise fail(entry, str(exc)) from exc
        refs.append(ref)
    labels = [(r.name, r.args_json) for r in refs]
    if len(set(labels)) != len(labels):
        raise fail("workloads", "the same workload is listed twice")
    return refs


def _chips(value: Any, base_dir: Path, fail) -> list[ChipEntry]:
    entries = []
    for i, item in enumerate(_non_empty_list(value, "chips", fail)):
        entry = f"chips[{i}]"
        try:
            if isinstance(item, dict):
                config = ChipConfig.from_dict(item)
                label = config.name
            elif isinstance(item, str):
                is_file = item.endswith(".json") or (base_dir / item).is_file()
                if is_file and not (base_dir / item).is_file():
                    raise ConfigError(f"no such chip file {base_dir / item}")
                config = ChipConfig.from_json(base_dir / item) if is_file else ChipConfig.preset(item)
                label = item
            else:
                raise ConfigError(f"must be a preset name, a chip JSON file or a chip object (got {item!r})")
        except ConfigError as exc:
            raise fail(entry, str(exc)) from exc
        entries.append(ChipEntry(label, config))
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise fail("chips", f"two chips share the label {next(x for x in labels if labels.count(x) > 1)!r}")
    return entries


def chip_field_types() -> dict[str, Any]:
    """Every overridable dotted chip field (``section.field``) -> its type hint."""
    chip = ChipConfig()
    return {
        f"{section}.{name}": hint
        for section in chip.to_dict()
        if section != "name"
        for name, hint in typing.get_type_hints(type(getattr(chip, section))).items()
    }


def _parameters(value: Any, fail) -> dict[str, tuple[Any, ...]]:
    if not isinstance(value, dict):
        raise fail("parameters", f"must be a mapping of dotted chip fields to lists of values (got {value!r})")
    known = chip_field_types()
    parameters = {}
    for key, values in value.items():
        entry = f"parameters.{key}"
        if key not in known:
            section = str(key).split(".")[0]
            near = sorted(k for k in known if k.startswith(section + "."))
            hint = f"fields of {section}: {', '.join(near)}" if near else f"sections: {_sections(known)}"
            raise fail(entry, f"unknown chip field (dotted section.field); {hint}")
        values = _non_empty_list(values, entry, fail)
        for v in values:
            if not (v is None or isinstance(v, (bool, int, float, str))) or (
                isinstance(v, float) and not math.isfinite(v)
            ):
                raise fail(entry, f"values must be numbers, strings, booleans or null (got {v!r})")
        values = [
            float(v) if known[key] is float and isinstance(v, int) and not isinstance(v, bool) else v for v in values
        ]
        kinds = {
            "number" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v).__name__ for v in values
        }
        if len(kinds - {"NoneType"}) > 1:
            raise fail(entry, f"values must share one type (got {sorted(kinds)})")
        if len({json.dumps(v) for v in values}) != len(values):
            raise fail(entry, f"duplicate values {values}")
        parameters[key] = tuple(values)
    return parameters


def _sections(known: dict[str, Any]) -> str:
    return ", ".join(dict.fromkeys(k.split(".")[0] for k in known))


def _seeds(value: Any, fail) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise fail("seeds", f"a count must be at least 1 (got {value}): the grid would have no points")
        return tuple(range(value))
    values = _non_empty_list(value, "seeds", fail)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in values):
        raise fail("seeds", f"must be a count or a list of non-negative integers (got {value!r})")
    if len(set(values)) != len(values):
        raise fail("seeds", f"duplicate seeds in {values}")
    return tuple(values)
