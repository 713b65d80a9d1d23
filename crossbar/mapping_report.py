"""The mapping report: where every layer of a compiled model went, and how full its tiles are."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from crossbar.compiler import DIGITAL_REASON
from crossbar.hpd import HPDLinear
from crossbar.layers import TiledLinear

# What each factor of an HPD layer holds, by orientation: (inner, outer).
_HPD_FACTORS = {"us_analog": ("V^T", "U*S"), "svt_analog": ("S*V^T", "U")}


@dataclass
class LayerRow:
    """One module of the model: a tiled layer (with its grid) or a module left digital (with its reason).

    ``shape`` and ``tile_grid`` are those of one group's matrix; ``tiles`` counts all ``groups``. ``aliases``:
    other names of the same module; ``shares``: the layer whose programmed matrix this one uses (a tied weight:
    no tiles of its own). ``reason``: why a module with parameters stays digital.
    """

    name: str
    kind: str
    placement: str
    shape: tuple[int, int] | None = None
    tile_grid: tuple[int, int] | None = None
    tiles: int = 0
    utilisation: float | None = None
    parameters: int = 0
    hpd: str | None = None  # for a factor of an HPD layer: which factor, e.g. "U*S"
    groups: int = 1
    aliases: list[str] = field(default_factory=list)
    shares: str | None = None
    reason: str | None = None


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
            f"{'layer':<{width}} {'type':<20} {'placed':<8} {'shape (out,in)':>15} {'grid':>7} {'tiles':>6} {'util':>6}"
        )
        lines = [header, columns, "-" * len(columns)]
        for row in self.layers:
            shape = f"{row.shape[0]}x{row.shape[1]}" if row.shape else "-"
            shape = f"{row.groups}x " + shape if row.groups > 1 else shape
            grid = f"{row.tile_grid[0]}x{row.tile_grid[1]}" if row.tile_grid else "-"
            util = f"{row.utilisation:.1%}" if row.utilisation is not None else "-"
            notes = [f"also {', '.join(row.aliases)}"] if row.aliases else []
            notes += [f"tiles of {row.shares}"] if row.shares else []
            notes += [row.reason] if row.reason else []
            note = f"  ({'; '.join(notes)})" if notes else ""
            lines.append(
                f"{row.name:<{width}} {row.kind[:20]:<20} {row.placement:<8} {shape:>15} {grid:>7} {row.tiles:>6} "
                f"{util:>6}{note}"
            )
        for h in self.hpd:
            lines.append(
                f"HPD {h.name}: rank {h.rank}, {h.analog} analog, {h.digital} digital "
                f"({h.digital_macs} digital MACs per input vector)"
            )
        return "\n".join(lines)


def _digital_work(module: nn.Module) -> bool:
    """A leaf module, one whose own forward computes (it defines ``digital_ops``, e.g. an SSM mixer), or one
    with parameters of its own (e.g. a module the compiler left digital)."""
    return (
        not list(module.children())
        or callable(getattr(module, "digital_ops", None))
        or any(True for _ in module.parameters(recurse=False))
    )


def _digital_reason(module: nn.Module) -> str | None:
    """Why a module with parameters is digital: the compiler's reason, or what its parameters are."""
    reason = getattr(module, DIGITAL_REASON, None)
    if reason is not None or not any(True for _ in module.parameters(recurse=False)):
        return reason
    if all(p.dim() < 2 for p in module.parameters(recurse=False)):
        return "elementwise parameters (no weight matrix)"
    return None


def _tiled_row(name: str, module: TiledLinear, first_user: dict[int, str]) -> LayerRow:
    groups = module.groups
    row = LayerRow(name, module.kind(), module.placement, groups=groups)
    row.shape = (module.out_features // groups, module.in_features // groups)
    owner = first_user.setdefault(id(module._programmed), name)
    if owner != name:
        row.shares = owner
    if module.placement == "analog":
        grid = module.tiles[0].grid
        row.tile_grid = (grid.row_blocks, grid.col_blocks)
        row.utilisation = grid.utilisation
        row.tiles = 0 if row.shares else groups * grid.tiles
    row.parameters = sum(p.numel() for p in module.parameters())
    return row


def report(compiled: nn.Module) -> MappingReport:
    """The mapping report of a model returned by ``crossbar.compile``: every module that computes, analog or
    digital (with the reason a module with parameters stays digital)."""
    tiled = [(n, m) for n, m in compiled.named_modules() if isinstance(m, TiledLinear)]
    if not tiled:
        raise ValueError("crossbar.report: the model was not compiled (no tiled layer); use crossbar.compile first")
    chip = tiled[0][1].chip
    result = MappingReport(chip=chip.name, tile=(chip.tile.rows, chip.tile.cols))
    tiled_names = {n for n, _ in tiled}
    aliases: dict[int, list[str]] = {}
    for name, module in compiled.named_modules(remove_duplicate=False):
        aliases.setdefault(id(module), []).append(name)
    factors = {}
    for name, module in compiled.named_modules():
        if isinstance(module, HPDLinear):
            inner, outer = _HPD_FACTORS[module.orientation]
            factors.update({f"{name}.inner": inner, f"{name}.outer": outer})
            analog, digital = (outer, inner) if module.digital_factor == "inner" else (inner, outer)
            result.hpd.append(HPDRow(name, module.rank, module.orientation, analog, digital, module.digital_macs()))
    first_user: dict[int, str] = {}
    for name, module in compiled.named_modules():
        if isinstance(module, TiledLinear):
            row = _tiled_row(name, module, first_user)
            if name in factors:
                row.kind, row.hpd = f"HPD {factors[name]}", factors[name]
        elif _digital_work(module) and not any(name.startswith(t + ".") for t in tiled_names):
            params = sum(p.numel() for p in module.parameters(recurse=False))
            row = LayerRow(name, type(module).__name__, "digital", parameters=params, reason=_digital_reason(module))
        else:
            continue
        row.aliases = [a for a in aliases[id(module)] if a != name]
        result.layers.append(row)
    return result
