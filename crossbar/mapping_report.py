"""The mapping report: where every layer of a compiled model went, and how full its tiles are."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from crossbar.hpd import HPDLinear
from crossbar.layers import TiledConv1d, TiledLinear
from crossbar.tiles import AnalogTiles

# What each factor of an HPD layer holds, by orientation: (inner, outer).
_HPD_FACTORS = {"us_analog": ("V^T", "U*S"), "svt_analog": ("S*V^T", "U")}


@dataclass
class LayerRow:
    """One module of the model: a tiled layer (with its grid) or a module left digital."""

    name: str
    kind: str
    placement: str
    shape: tuple[int, int] | None = None
    tile_grid: tuple[int, int] | None = None
    tiles: int = 0
    utilisation: float | None = None
    parameters: int = 0
    hpd: str | None = None  # for a factor of an HPD layer: which factor, e.g. "U*S"


@dataclass
class HPDRow:
    """One layer split by HPD: its rank and where each factor went."""

    name: str
    rank: int
    orientation: str
    analog: str
    digital: str
    digital_macs: int  # multiply-accumulates of the digital factor per input vector


@dataclass
class MappingReport:
    """Per-layer placement of a compiled model; ``str()`` is a table, ``to_dict()`` is JSON-ready."""

    chip: str
    tile: tuple[int, int]
    layers: list[LayerRow] = field(default_factory=list)
    hpd: list[HPDRow] = field(default_factory=list)

    @property
    def analog_tiles(self) -> int:
        return sum(row.tiles for row in self.layers if row.placement == "analog")

    def to_dict(self) -> dict[str, Any]:
        return {
            "chip": self.chip,
            "tile": list(self.tile),
            "analog_tiles": self.analog_tiles,
            "layers": [asdict(row) for row in self.layers],
            "hpd": [asdict(row) for row in self.hpd],
        }

    def __str__(self) -> str:
        width = max([28] + [len(row.name) for row in self.layers])
        header = f"chip {self.chip}, tiles {self.tile[0]}x{self.tile[1]}, {self.analog_tiles} analog tiles used"
        columns = (
            f"{'layer':<{width}} {'type':<12} {'placed':<8} {'shape (out,in)':>15} {'grid':>7} {'tiles':>6} {'util':>6}"
        )
        lines = [header, columns, "-" * len(columns)]
        for row in self.layers:
            shape = f"{row.shape[0]}x{row.shape[1]}" if row.shape else "-"
            grid = f"{row.tile_grid[0]}x{row.tile_grid[1]}" if row.tile_grid else "-"
            util = f"{row.utilisation:.1%}" if row.utilisation is not None else "-"
            lines.append(
                f"{row.name:<{width}} {row.kind:<12} {row.placement:<8} {shape:>15} {grid:>7} {row.tiles:>6} {util:>6}"
            )
        for h in self.hpd:
            lines.append(
                f"HPD {h.name}: rank {h.rank}, {h.analog} analog, {h.digital} digital "
                f"({h.digital_macs} digital MACs per input vector)"
            )
        return "\n".join(lines)


def _digital_work(module: nn.Module) -> bool:
    """A leaf module, or one whose own forward computes (it defines ``digital_ops``, e.g. an SSM mixer)."""
    return not list(module.children()) or callable(getattr(module, "digital_ops", None))


def report(compiled: nn.Module) -> MappingReport:
    """The mapping report of a model returned by ``crossbar.compile``."""
    tiled = [(n, m) for n, m in compiled.named_modules() if isinstance(m, TiledLinear)]
    if not tiled:
        raise ValueError("crossbar.report: the model was not compiled (no tiled layer); use crossbar.compile first")
    chip = tiled[0][1].chip
    result = MappingReport(chip=chip.name, tile=(chip.tile.rows, chip.tile.cols))
    tiled_names = {n for n, _ in tiled}
    factors = {}
    for name, module in compiled.named_modules():
        if isinstance(module, HPDLinear):
            inner, outer = _HPD_FACTORS[module.orientation]
            factors.update({f"{name}.inner": inner, f"{name}.outer": outer})
            analog, digital = (outer, inner) if module.digital_factor == "inner" else (inner, outer)
            result.hpd.append(HPDRow(name, module.rank, module.orientation, analog, digital, module.digital_macs()))
    for name, module in compiled.named_modules():
        if isinstance(module, TiledLinear):
            kind = "Conv1d(1x1)" if isinstance(module, TiledConv1d) else "Linear"
            if name in factors:
                kind = f"HPD {factors[name]}"
            row = LayerRow(name, kind, module.placement, shape=(module.out_features, module.in_features))
            row.hpd = factors.get(name)
            if isinstance(module.tile, AnalogTiles):
                grid = module.tile.grid
                row.tile_grid = (grid.row_blocks, grid.col_blocks)
                row.tiles, row.utilisation = grid.tiles, grid.utilisation
            row.parameters = sum(p.numel() for p in module.parameters())
            result.layers.append(row)
        elif _digital_work(module) and not any(name.startswith(t + ".") for t in tiled_names):
            params = sum(p.numel() for p in module.parameters(recurse=False))
            result.layers.append(LayerRow(name, type(module).__name__, "digital", parameters=params))
    return result
