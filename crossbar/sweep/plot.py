"""Plot of a sweep summary: the metric against one coordinate, a line and 95% confidence band per series."""

from __future__ import annotations

import os

import pandas as pd

from crossbar.config import ConfigError
from crossbar.fileio import write_figure_atomic


def default_x(table: pd.DataFrame, coordinates: list[str]) -> str:
    """The first swept parameter with several values; else the chip, else the workload."""
    varying = [c for c in coordinates if table[c].nunique(dropna=False) > 1]
    parameters = [c for c in varying if "." in c]
    return (parameters or varying or coordinates)[0]


def plot_summary(
    table: pd.DataFrame, coordinates: list[str], path: str | os.PathLike, x: str | None = None, logx: bool = False
) -> None:
    """Write a PNG of ``mean`` against ``x`` with a ``ci95`` band, one series per combination of the other
    coordinates that vary. Numeric x gives lines and bands; text x gives points with error bars."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError("plots need matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if table.empty:
        raise ConfigError("nothing to plot: no finished points")
    x = x or default_x(table, coordinates)
    if x not in coordinates:
        raise ConfigError(f"--x {x}: not a coordinate of this sweep ({', '.join(coordinates)})")
    others = [c for c in coordinates if c != x and table[c].nunique(dropna=False) > 1]
    numeric = pd.api.types.is_numeric_dtype(table[x])
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    series = table.groupby(others, sort=False, dropna=False) if others else [((), table)]
    for labels, part in series:
        labels = labels if isinstance(labels, tuple) else (labels,)
        label = ", ".join(f"{c}={v}" for c, v in zip(others, labels, strict=True)) or None
        part = part.sort_values(x) if numeric else part
        xs = part[x] if numeric else part[x].astype(str)
        ci = part["ci95"].fillna(0.0)
        if numeric:
            (line,) = axes.plot(xs, part["mean"], marker="o", label=label)
            axes.fill_between(xs, part["mean"] - ci, part["mean"] + ci, color=line.get_color(), alpha=0.2)
        else:
            axes.errorbar(xs, part["mean"], yerr=ci, marker="o", capsize=3, linestyle="none", label=label)
    reference = table["float"].dropna().unique()
    if len(reference) == 1:
        axes.axhline(reference[0], color="grey", linestyle="--", linewidth=1, label="float model")
    if logx and numeric:
        axes.set_xscale("log")
    low, high = table["n"].min(), table["n"].max()
    seeds = f"{low}" if low == high else f"{low}-{high}"
    axes.set_xlabel(x)
    axes.set_ylabel(f"{table['metric_name'].iloc[0]} (mean, 95% CI over {seeds} seeds)")
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    figure.tight_layout()
    write_figure_atomic(figure, path)
    plt.close(figure)
