"""Sensitivity analysis: noise on one layer (or one block) at a time, the loss increase it causes, ranked;
and the choice of which layers go digital under a budget of digital multiply-accumulates (MACs).

    result = sensitivity.analyse(model, loss, WeightNoise("additive", 0.05), seeds=range(3), by="layer")
    print(result)                                  # ranking table
    chosen = sensitivity.place_digital(result, budget_macs=65536)
    analog = crossbar.compile(model, chip, digital=chosen)

``loss(model) -> float`` evaluates a model on held-out data (lower is better; e.g. mean cross-entropy).
MACs are counted per input vector of a layer (``in * out``): for sequence models every layer here runs once
per token, so the counts add up to MACs per token.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossbar import hpd as hpd_transform
from crossbar import progress as progress_bars
from crossbar.config import ConfigError
from crossbar.weight_noise import WeightNoise, analog_layers, noisy_copy

GROUPINGS = ("layer", "block", "type")
Loss = Callable[[nn.Module], float]


def layer_macs(model: nn.Module, name: str) -> int:
    """Multiply-accumulates of one mapped layer per input vector: in_features * out_features."""
    weight = model.get_submodule(name).weight
    return int(weight.shape[0] * np.prod(weight.shape[1:]))


def groups(model: nn.Module, by: str = "layer") -> dict[str, list[str]]:
    """The units of the analysis: each analog layer (``by="layer"``), the layers of each block of a
    ModuleList (``by="block"``: ``blocks.3.*`` form ``blocks.3``; layers outside any list stay alone), or the
    layers of one type across blocks (``by="type"``: the name with block indices as ``*``, so
    ``layers.0.self_attn.q_proj`` and ``layers.1.self_attn.q_proj`` form ``layers.*.self_attn.q_proj``)."""
    if by not in GROUPINGS:
        raise ConfigError(f"sensitivity: by must be one of {', '.join(GROUPINGS)} (got {by!r})")
    layers = analog_layers(model)
    if by == "layer":
        return {name: [name] for name in layers}
    result: dict[str, list[str]] = {}
    if by == "type":
        for name in layers:
            result.setdefault(re.sub(r"\.\d+(?=\.|$)", ".*", name), []).append(name)
        return result
    for name in layers:
        match = re.match(r"^(.*?\.\d+)(\.|$)", name)
        result.setdefault(match.group(1) if match else name, []).append(name)
    return result


@dataclass
class SensitivityRow:
    """One group: its layers, their MACs, and the loss increase over the seeds (mean, std, each)."""

    name: str
    layers: list[str]
    macs: int
    increase: float
    spread: float
    samples: list[float] = field(default_factory=list)


@dataclass
class Sensitivity:
    """A ranking, most sensitive first; ``str()`` is a table, ``to_dict()`` JSON-ready, ``plot()`` a figure."""

    baseline: float
    noise: dict
    by: str
    seeds: list[int]
    rows: list[SensitivityRow]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Sensitivity:
        """The inverse of ``to_dict`` (e.g. a ranking read back from a study's JSON)."""
        return cls(**{**data, "rows": [SensitivityRow(**row) for row in data["rows"]]})

    def __str__(self) -> str:
        width = max([5] + [len(row.name) for row in self.rows])
        header = f"{'rank':>4}  {'group':<{width}} {'MACs':>9} {'loss increase':>14} {'+-':>8}"
        lines = [f"baseline loss {self.baseline:.4f}; noise {self.noise}; seeds {self.seeds}", header]
        lines.append("-" * len(header))
        for rank, row in enumerate(self.rows, 1):
            lines.append(f"{rank:>4}  {row.name:<{width}} {row.macs:>9} {row.increase:>14.4f} {row.spread:>8.4f}")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> None:
        """A horizontal bar chart of the ranking (mean and std over seeds), written atomically as PNG."""

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from crossbar.fileio import write_figure_atomic

        rows = self.rows[::-1]
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.5))
        ax.barh([r.name for r in rows], [r.increase for r in rows], xerr=[r.spread for r in rows], color="C0")
        ax.set_xlabel(f"loss increase (baseline {self.baseline:.3f}), mean and std over {len(self.seeds)} seeds")
        ax.set_title(f"sensitivity by {self.by}: {', '.join(f'{k} {v}' for k, v in self.noise.items())}", fontsize=8)
        fig.tight_layout()
        write_figure_atomic(fig, path)
        plt.close(fig)


def analyse(
    model: nn.Module,
    loss: Loss,
    noise: WeightNoise,
    seeds: Iterable[int] = (0, 1, 2),
    by: str = "layer",
    hpd: hpd_transform.HPDSpec | None = None,
    progress: bool | None = None,
) -> Sensitivity:
    """Rank the groups of ``model`` (``groups(model, by)``) by the loss increase noise on them alone causes.

    ``hpd``: analyse the model with these layers split (their digital factors exact). Each seed draws the
    same noise on a layer in every evaluation it is part of. ``progress``: a bar over the (group, seed)
    evaluations on standard error (``crossbar.progress``).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("sensitivity: give at least one seed")
    work = model
    if hpd is not None:
        work = copy.deepcopy(model)
        hpd_transform.apply(work, hpd)
    units = groups(work, by)
    bar = progress_bars.bar(total=len(units) * len(seeds), desc="sensitivity", unit="evaluation", progress=progress)
    with torch.no_grad(), bar:
        baseline = float(loss(work))
        rows = []
        for name, layers in units.items():
            bar.set_postfix_str(name, refresh=False)
            samples = []
            for seed in seeds:
                samples.append(float(loss(noisy_copy(work, noise, seed, layers))) - baseline)
                bar.update(1)
            macs = sum(layer_macs(work, layer) for layer in layers)
            rows.append(SensitivityRow(name, layers, macs, float(np.mean(samples)), float(np.std(samples)), samples))
    rows.sort(key=lambda row: row.increase, reverse=True)
    return Sensitivity(baseline, noise.describe(), by, seeds, rows)


def place_digital(result: Sensitivity, budget_macs: int, candidates: Sequence[str] | None = None) -> list[str]:
    """Layers to put on exact digital tiles: as much loss increase as fits in ``budget_macs`` per vector.

    A 0/1 knapsack (value: the group's loss increase, weight: its MACs) solved greedily by value per MAC,
    then kept only if it beats the single most valuable group that fits (the classic 1/2-approximation).
    Groups with no positive loss increase are never chosen. Returns layer names (a group's layers together).
    ``candidates``: restrict to these group names.
    """
    if isinstance(budget_macs, bool) or not isinstance(budget_macs, int | np.integer) or budget_macs < 0:
        raise ConfigError(f"digital budget: must be a non-negative integer number of MACs (got {budget_macs!r})")
    rows = [r for r in result.rows if r.increase > 0 and (candidates is None or r.name in candidates)]
    fits = [r for r in rows if r.macs <= budget_macs]
    greedy, used = [], 0
    for row in sorted(fits, key=lambda r: r.increase / r.macs, reverse=True):
        if used + row.macs <= budget_macs:
            greedy.append(row)
            used += row.macs
    best = max(fits, key=lambda r: r.increase, default=None)
    if best is not None and best.increase > sum(r.increase for r in greedy):
        greedy = [best]
    return [layer for row in greedy for layer in row.layers]


def random_placement(result: Sensitivity, budget_macs: int, rng: np.random.Generator) -> list[str]:
    """The baseline for ``place_digital``: groups in a random order, each taken while it fits the budget."""
    chosen, used = [], 0
    for index in rng.permutation(len(result.rows)):
        row = result.rows[index]
        if used + row.macs <= budget_macs:
            chosen.extend(row.layers)
            used += row.macs
    return chosen
