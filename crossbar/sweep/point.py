"""One point of a sweep (workload x chip x parameter values x seed) and its evaluation.

A point is plain data (the chip as its full JSON dict), so it travels to any worker, and its ``key`` (a hash
of the workload, the full chip config and the seed) identifies its result across runs.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import crossbar
from crossbar.config import ChipConfig
from crossbar.sweep.workloads import WorkloadRef, build, evaluate, float_metric


@dataclass(frozen=True)
class Point:
    """``chip``: the full chip config (``ChipConfig.to_dict()``, overrides applied); ``chip_label``: the
    chip as the spec names it; ``parameters``: the overridden dotted fields and their values (the grid
    coordinates); ``seed``: the chip instance."""

    workload: WorkloadRef
    chip_label: str
    chip: dict[str, Any]
    parameters: tuple[tuple[str, Any], ...]
    seed: int

    def config(self) -> dict[str, Any]:
        """Everything that determines the result: the exact config of the point, JSON-ready."""
        return {
            "workload": {"name": self.workload.name, "args": self.workload.args},
            "chip": self.chip,
            "seed": self.seed,
        }

    @property
    def key(self) -> str:
        """SHA-256 (first 20 hex digits) of the canonical JSON of ``config()``."""
        canonical = json.dumps(self.config(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:20]

    def coordinates(self) -> dict[str, Any]:
        """The point's place in the grid: workload, chip, each parameter and seed."""
        return {"workload": self.workload.label, "chip": self.chip_label, **dict(self.parameters), "seed": self.seed}


def evaluate_point(point: Point) -> dict[str, Any]:
    """Compile the workload's model onto the point's chip instance and evaluate it: a flat dict of metrics.

    Keys: ``metric_name``; ``metric``, the workload's metric on the chip; ``float_metric``, the same for
    the float model; ``compile_s`` and ``evaluate_s``, wall-clock seconds of compiling (programming the
    tiles: device physics, IR drop) and of the forward passes; ``energy_j``, ``latency_s`` and
    ``tops_per_watt``, per inference, from ``crossbar.estimate`` on the workload's first batch of inputs.
    """
    workload = build(point.workload)
    start = time.perf_counter()
    compiled = crossbar.compile(
        workload.model,
        ChipConfig.from_dict(point.chip),
        seed=point.seed,
        calibration_inputs=workload.calibration_inputs,
    )
    compiled_at = time.perf_counter()
    value = evaluate(compiled, workload)
    timings = {"compile_s": compiled_at - start, "evaluate_s": time.perf_counter() - compiled_at}
    cost = crossbar.estimate(compiled, workload.inputs[: workload.batch_size or len(workload.inputs)])
    energy = {"energy_j": cost.energy, "latency_s": cost.latency, "tops_per_watt": cost.tops_per_watt}
    return {
        "metric_name": workload.metric,
        "metric": value,
        "float_metric": float_metric(point.workload),
        **energy,
        **timings,
    }
