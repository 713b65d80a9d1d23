"""The energy report: per inference and per layer, by component; a table, a dict and a breakdown figure."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossbar.fileio import write_figure_atomic

COMPONENTS = ("dac", "drivers", "adc", "adc_front", "array", "control", "digital", "psum", "movement")
_COLOURS = {
    "dac": "#4c72b0",
    "drivers": "#8fb0de",
    "adc": "#dd8452",
    "adc_front": "#f2b98c",
    "array": "#55a868",
    "control": "#937860",
    "digital": "#c44e52",
    "psum": "#da8bc3",
    "movement": "#8172b3",
}


@dataclass
class LayerEnergy:
    """One module: energy per inference by component (J), latency per inference (s), operations (2 per MAC)."""

    name: str
    kind: str
    placement: str
    energy: dict[str, float]
    latency: float
    ops: float

    @property
    def total(self) -> float:
        return sum(self.energy.values())


@dataclass
class EnergyReport:
    """What ``crossbar.estimate`` returns. Layers run one after the other, so latencies add up."""

    chip: str
    batch: int
    layers: list[LayerEnergy] = field(default_factory=list)
    constants: dict[str, float] = field(default_factory=dict)

    @property
    def energy(self) -> float:
        """J per inference."""
        return sum(layer.total for layer in self.layers)

    @property
    def by_component(self) -> dict[str, float]:
        """J per inference of each component."""
        return {c: sum(layer.energy[c] for layer in self.layers) for c in COMPONENTS}

    @property
    def latency(self) -> float:
        """s per inference."""
        return sum(layer.latency for layer in self.layers)

    @property
    def ops(self) -> float:
        """Operations per inference: 2 per multiply-accumulate of every matrix product (analog or digital)."""
        return sum(layer.ops for layer in self.layers)

    @property
    def tops(self) -> float:
        """Throughput, 1e12 operations per second."""
        return self.ops / self.latency / 1e12 if self.latency > 0 else 0.0

    @property
    def tops_per_watt(self) -> float:
        """Energy efficiency, 1e12 operations per joule."""
        return self.ops / self.energy / 1e12 if self.energy > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "chip": self.chip,
            "batch": self.batch,
            "energy_per_inference_J": self.energy,
            "energy_by_component_J": self.by_component,
            "latency_per_inference_s": self.latency,
            "ops_per_inference": self.ops,
            "tops": self.tops,
            "tops_per_watt": self.tops_per_watt,
            "layers": [
                {
                    "name": layer.name,
                    "kind": layer.kind,
                    "placement": layer.placement,
                    "energy_J": dict(layer.energy),
                    "total_J": layer.total,
                    "latency_s": layer.latency,
                    "ops": layer.ops,
                }
                for layer in self.layers
            ],
            "constants": dict(self.constants),
        }

    def __str__(self) -> str:
        header = (
            f"chip {self.chip}: {self.energy * 1e9:.4g} nJ and {self.latency * 1e6:.4g} us per inference, "
            f"{self.tops:.3g} TOPS, {self.tops_per_watt:.3g} TOPS/W (batch {self.batch})"
        )
        columns = f"{'layer':<24} {'type':<12} {'placed':<8}" + "".join(f" {c + ' nJ':>11}" for c in COMPONENTS)
        columns += f" {'total nJ':>11} {'us':>9}"
        lines = [header, columns, "-" * len(columns)]
        rows = [*self.layers, LayerEnergy("total", "", "", self.by_component, self.latency, self.ops)]
        for row in rows:
            values = "".join(f" {row.energy[c] * 1e9:>11.4g}" for c in COMPONENTS)
            lines.append(
                f"{row.name[:24]:<24} {row.kind[:12]:<12} {row.placement:<8}{values}"
                f" {row.total * 1e9:>11.4g} {row.latency * 1e6:>9.4g}"
            )
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> None:
        """Write a figure of energy per layer, stacked by component, and the total split (PNG, PDF or SVG by
        the file's suffix), atomically."""
        from matplotlib.figure import Figure

        path = Path(path)
        fmt = path.suffix.lstrip(".").lower() or "png"
        if fmt not in ("png", "pdf", "svg"):
            raise ValueError(f"report.plot: {path}: use a .png, .pdf or .svg file name")
        figure = Figure(figsize=(10, 0.4 * len(self.layers) + 2.5), layout="constrained")
        bars, split = figure.subplots(1, 2, width_ratios=(3, 1))
        names = [layer.name for layer in self.layers]
        left = [0.0] * len(self.layers)
        for component in COMPONENTS:
            values = [layer.energy[component] * 1e9 for layer in self.layers]
            bars.barh(names, values, left=left, color=_COLOURS[component], label=component)
            left = [a + b for a, b in zip(left, values, strict=True)]
        bars.invert_yaxis()
        bars.set_xlabel("energy per inference (nJ)")
        bars.set_title(f"{self.chip}: {self.energy * 1e9:.3g} nJ, {self.tops_per_watt:.3g} TOPS/W")
        bars.legend(loc="lower right", fontsize="small")
        totals = self.by_component
        split.bar(list(totals), [v * 1e9 for v in totals.values()], color=[_COLOURS[c] for c in totals])
        split.set_ylabel("nJ per inference")
        split.set_title("by component")
        split.tick_params(axis="x", labelrotation=60)
        for label in split.get_xticklabels():
            label.set_horizontalalignment("right")
        write_figure_atomic(figure, path, fmt)
