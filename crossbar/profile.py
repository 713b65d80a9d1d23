"""Device profiles: the JSON format the core reads (``calibration`` fits and writes them), and sampling.

A profile describes the conductance of a device programmed to a target g_T (siemens), as polynomials in
x = g_T / g_max with coefficients lowest order first, in siemens at the profile's ``g_max`` (the g_max of the
measurements it was fitted from):

- ``programming``: mean offset and std of g - g_T right after programming;
- ``drift`` (power law): g(t) = g_prog ((t + t0) / t0)^-nu, nu ~ |N(nu_mean, nu_std)| interpolated
  between ``levels`` (S), as aihwkit's CustomDriftPCMLikeNoiseModel;
- ``relaxation`` (time table, replaces programming and drift): at each of ``times`` (s) a mean-offset and
  a std polynomial; between times the coefficients are interpolated linearly in log t (linearly in t
  between 0 and the first positive time); times outside the table are refused;
- ``spread`` (version 2; replaces programming, drift and relaxation): the nonparametric form,
  ``crossbar.spread_table.SpreadTable``: mean offset and std tabulated on a grid of targets per time, and
  empirical quantiles of the standardised deviation per level and time (the measured tails);
- ``read_noise``: std of one read about the device's conductance (a polynomial), drawn once at t_inference.

Used on a chip with another g_max, every siemens quantity scales by chip g_max / profile g_max (relative
noise preserved, as aihwkit rescales its published models). Sampling goes through ``crossbar.device``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from crossbar.errors import ProfileError
from crossbar.fileio import write_text_atomic
from crossbar.spread_table import SpreadTable, time_weight

PROFILE_FORMAT = "crossbar-device-profile"
PROFILE_VERSION = 2  # 2 adds ``spread``; version 1 files (no ``spread``) still load
READABLE_VERSIONS = (1, 2)
PRESET_PACKAGE = "crossbar.presets.devices"


@dataclass(frozen=True)
class Polynomials:
    """``mean`` and ``std`` coefficient lists (S at the profile's g_max) in x = g_target / g_max."""

    mean: list[float]
    std: list[float]


@dataclass(frozen=True)
class PowerLawDrift:
    t0: float
    levels: list[float]
    nu_mean: list[float]
    nu_std: list[float]


@dataclass(frozen=True)
class RelaxationTable:
    times: list[float]
    mean: list[list[float]]
    std: list[list[float]]

    def at(self, t: float) -> Polynomials:
        """The mean and std polynomials at time t (s), interpolated between the table's times."""
        k, w = time_weight(np.asarray(self.times), t)
        if w == 0:
            return Polynomials(self.mean[k], self.std[k])

        def blend(table: list[list[float]]) -> list[float]:
            lo, hi = np.asarray(table[k]), np.asarray(table[k + 1])
            return [float(v) for v in (1 - w) * lo + w * hi]

        return Polynomials(blend(self.mean), blend(self.std))


@dataclass(frozen=True)
class ReadNoisePolynomial:
    window: float
    std: list[float]


@dataclass(frozen=True)
class DeviceProfile:
    """A fitted device (see the module docstring for each component); ``g_max`` siemens it was fitted at."""

    name: str
    technology: str
    g_max: float
    source: str = ""
    licence: str = ""
    fitted_from: dict[str, Any] = field(default_factory=dict)
    programming: Polynomials | None = None
    drift: PowerLawDrift | None = None
    relaxation: RelaxationTable | None = None
    read_noise: ReadNoisePolynomial | None = None
    spread: SpreadTable | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.g_max, (int, float)) and math.isfinite(self.g_max) and self.g_max > 0):
            raise ProfileError(f"g_max: must be a positive number of siemens (got {self.g_max!r})")
        if self.drift is not None and self.relaxation is not None:
            raise ProfileError("drift, relaxation: a profile has a power-law drift or a relaxation table, not both")
        others = [name for name in ("programming", "drift", "relaxation") if getattr(self, name) is not None]
        if self.spread is not None and others:
            raise ProfileError(f"spread, {others[0]}: a spread table replaces programming, drift and relaxation")
        if self.relaxation is not None:
            times = self.relaxation.times
            if not times or any(b <= a for a, b in zip(times, times[1:], strict=False)) or times[0] < 0:
                raise ProfileError("relaxation.times: must be non-negative and strictly increasing")
            for name in ("mean", "std"):
                if len(getattr(self.relaxation, name)) != len(times):
                    raise ProfileError(f"relaxation.{name}: needs one polynomial per time ({len(times)})")
        if self.drift is not None:
            lengths = {len(self.drift.levels), len(self.drift.nu_mean), len(self.drift.nu_std)}
            if len(lengths) != 1 or self.drift.t0 <= 0:
                raise ProfileError("drift: levels, nu_mean and nu_std need equal lengths and t0 > 0")

    @property
    def time_range(self) -> tuple[float, float]:
        """Times after programming (s) the profile can be sampled at."""
        table = self.relaxation or self.spread
        if table is not None:
            return table.times[0], table.times[-1]
        return 0.0, math.inf

    def program(self, g_target: np.ndarray, t_inference: float, seed: int, g_max: float | None = None) -> np.ndarray:
        """Conductances (siemens, shape of ``g_target``) of one seeded programming, read at ``t_inference`` s.

        ``g_max`` (S) of the chip; defaults to the profile's own.
        """
        from crossbar.device import program_profile  # crossbar.device imports this module

        return program_profile(self, np.asarray(g_target, dtype=np.float64), t_inference, seed, g_max)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, **asdict(self)}

    def save(self, path: str | os.PathLike) -> None:
        """Write the profile as JSON, atomically."""
        text = json.dumps(self.to_dict(), indent=1)
        # one line per list of numbers (a polynomial, a table row): readable and diffable
        text = re.sub(r"\[[^\[\]{}\"]*\]", lambda m: re.sub(r"\s+", " ", m.group(0)), text)
        write_text_atomic(path, text + "\n")

    @classmethod
    def from_dict(cls, data: Any) -> DeviceProfile:
        if not isinstance(data, dict):
            raise ProfileError("profile: must be a JSON object")
        if data.get("format") != PROFILE_FORMAT:
            raise ProfileError(f"format: must be {PROFILE_FORMAT!r} (got {data.get('format')!r})")
        if data.get("version") not in READABLE_VERSIONS:
            raise ProfileError(
                f"version: {data.get('version')!r} is not supported (this reader reads {READABLE_VERSIONS})"
            )
        if data.get("version") == 1 and data.get("spread") is not None:
            raise ProfileError("spread: needs profile version 2")
        parts = {
            "programming": Polynomials,
            "drift": PowerLawDrift,
            "relaxation": RelaxationTable,
            "read_noise": ReadNoisePolynomial,
            "spread": SpreadTable,
        }
        known = {"format", "version", "name", "technology", "g_max", "source", "licence", "fitted_from", *parts}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProfileError(f"{unknown[0]}: unknown field; known: {sorted(known)}")
        missing = [name for name in ("name", "technology", "g_max") if name not in data]
        if missing:
            raise ProfileError(f"{missing[0]}: missing")
        kwargs = {k: v for k, v in data.items() if k not in parts and k not in ("format", "version")}
        for name, part in parts.items():
            value = data.get(name)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ProfileError(f"{name}: must be an object or null")
            for key, entry in value.items():
                if key not in getattr(part, "TEXT_FIELDS", ()):
                    _check_numbers(entry, f"{name}.{key}")
            try:
                kwargs[name] = part(**value)
            except TypeError as exc:
                raise ProfileError(f"{name}: {exc}") from None
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DeviceProfile:
        """A profile from its JSON file."""
        path = Path(path)
        if not path.is_file():
            raise ProfileError(f"{path}: no such profile file")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProfileError(f"{path}: not valid JSON ({exc})") from None
        try:
            return cls.from_dict(data)
        except ProfileError as exc:
            raise ProfileError(f"{path}: {exc}") from None


def _check_numbers(value: Any, where: str) -> None:
    """A finite number, or a (nested) list of them."""
    if isinstance(value, list):
        for entry in value:
            _check_numbers(entry, where)
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProfileError(f"{where}: must hold finite numbers (got {value!r})")


def presets() -> list[str]:
    """Names of the profiles shipped with crossbar (``crossbar/presets/devices/*.json``)."""
    files = resources.files(PRESET_PACKAGE).iterdir()
    return sorted(p.name[: -len(".json")] for p in files if p.name.endswith(".json"))


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """A preset profile by name, or a profile JSON file by path."""
    text = str(name_or_path)
    if text in presets():
        return DeviceProfile.from_dict(json.loads(resources.files(PRESET_PACKAGE).joinpath(f"{text}.json").read_text()))
    if not (text.endswith(".json") or os.sep in text or Path(text).exists()):
        raise ProfileError(f"unknown profile {text!r}: not a preset ({', '.join(presets())}) nor a .json path")
    return DeviceProfile.load(text)
