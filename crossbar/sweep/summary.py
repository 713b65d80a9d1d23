"""Summary of a sweep's results: the metric's mean and 95% confidence interval over seeds, per grid cell."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from crossbar.sweep.point import Point

CONFIDENCE = 0.95


def coordinate_columns(points: list[Point]) -> list[str]:
    """Grid coordinates other than the seed: workload, chip, then each swept parameter."""
    return [name for name in points[0].coordinates() if name != "seed"] if points else []


def summarize(frame: pd.DataFrame, points: list[Point], metric: str = "metric") -> pd.DataFrame:
    """One row per grid cell (every coordinate but the seed) of the rows of ``frame`` that are ``points``.

    Columns: the coordinates, ``metric_name``, ``n`` (seeds), ``mean``, ``std`` (sample, ddof 1), ``ci95``
    (half-width of the 95% Student-t interval of the mean, ``t(0.975, n-1) * std / sqrt(n)``; NaN for n = 1),
    ``min``, ``max`` and ``float`` (the float model's metric).
    """
    keys = {p.key for p in points}
    rows = frame[frame["key"].isin(keys)] if len(frame) else frame
    columns = coordinate_columns(points)
    if rows.empty:
        return pd.DataFrame(columns=[*columns, "metric_name", "n", "mean", "std", "ci95", "min", "max", "float"])
    groups = rows.groupby(columns, sort=False, dropna=False)
    table = groups.agg(
        metric_name=("metric_name", "first"),
        n=(metric, "size"),
        mean=(metric, "mean"),
        std=(metric, "std"),
        min=(metric, "min"),
        max=(metric, "max"),
        float=("float_metric", "first"),
    ).reset_index()
    table.insert(
        table.columns.get_loc("std") + 1,
        "ci95",
        [_ci_half_width(s, n) for s, n in zip(table["std"], table["n"], strict=True)],
    )
    return table


def _ci_half_width(std: float, n: int) -> float:
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n))


def format_summary(table: pd.DataFrame) -> str:
    """The summary as a plain-text table."""
    if table.empty:
        return "(no results)"
    shown = table.copy()
    for name in ("mean", "std", "ci95", "min", "max", "float"):
        shown[name] = shown[name].map(lambda v: "nan" if pd.isna(v) else f"{v:.4f}")
    return shown.to_string(index=False)
