"""Grid expansion: a spec's workloads x chips x parameter values x seeds, as a list of points."""

from __future__ import annotations

import itertools
from typing import Any

from crossbar.config import ChipConfig, ConfigError
from crossbar.sweep.point import Point
from crossbar.sweep.spec import SpecError, SweepSpec


def override(chip: ChipConfig, parameters: dict[str, Any]) -> ChipConfig:
    """``chip`` with dotted fields set, e.g. ``{"adc.bits": 6, "tile.rows": 128}``, through ChipConfig.replace."""
    sections: dict[str, dict[str, Any]] = {}
    for dotted, value in parameters.items():
        section, _, name = dotted.partition(".")
        sections.setdefault(section, {})[name] = value
    return chip.replace(**sections)


def expand(spec: SweepSpec) -> list[Point]:
    """Every point of the grid, in a fixed order (workload, chip, parameters in file order, seed).

    Each chip with each combination of parameter values is built and validated here, so an impossible
    combination raises SpecError before any work starts.
    """
    names = list(spec.parameters)
    points = []
    for workload in spec.workloads:
        for entry in spec.chips:
            for values in itertools.product(*spec.parameters.values()):
                parameters = dict(zip(names, values, strict=True))
                try:
                    chip = override(entry.config, parameters)
                except ConfigError as exc:
                    raise SpecError(f"{spec.source}: chip {entry.label!r} with {parameters}: {exc}") from exc
                chip_dict = chip.to_dict()
                points.extend(
                    Point(workload, entry.label, chip_dict, tuple(parameters.items()), seed) for seed in spec.seeds
                )
    seen: dict[str, Point] = {}
    for point in points:
        if point.key in seen:
            raise SpecError(
                f"{spec.source}: two grid points are the same experiment: {seen[point.key].coordinates()} and "
                f"{point.coordinates()}"
            )
        seen[point.key] = point
    return points
