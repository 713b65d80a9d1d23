"""Workloads: what a sweep point evaluates, a model plus held-out data plus a metric.

Named workloads are registered by the packages that own them, through the ``crossbar.workloads`` entry-point
group: each entry point loads a dict mapping a name to a factory (``models`` registers ``digits-mlp``, the demo
MLP, and every trained model of its zoo). ``registered()`` gathers them. A spec may also name
``package.module:function`` or ``path/to/file.py:function`` (relative to the spec): a function taking the
spec's ``args`` as keyword arguments and returning a ``Workload`` (or a tuple model, inputs, targets,
metric name).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossbar.errors import ConfigError


@dataclass
class Workload:
    """``model`` (float torch module, eval mode) evaluated on ``inputs`` (a tensor, batch first) against
    ``targets`` with the metric named ``metric`` (see ``METRICS``). ``calibration_inputs``: sample inputs for
    chips with calibrated DAC/ADC ranges. ``batch_size``: evaluate in chunks of this many samples (None: one
    forward over all inputs)."""

    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    metric: str
    calibration_inputs: torch.Tensor | None = None
    batch_size: int | None = None


def _accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy: argmax over the last axis of outputs (..., classes) against targets (...)."""
    return float((outputs.argmax(dim=-1) == targets).float().mean())


def _cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cross-entropy in nats of logits (..., classes) against class targets (...)."""
    return float(nn.functional.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)))


def _mse(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean squared error, in the squared units of the outputs."""
    return float(nn.functional.mse_loss(outputs, targets.to(outputs.dtype)))


METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
    "accuracy": _accuracy,
    "cross_entropy": _cross_entropy,
    "mse": _mse,
}


ENTRY_POINT_GROUP = "crossbar.workloads"


@functools.lru_cache(maxsize=1)
def registered() -> dict[str, Callable[..., Workload]]:
    """Every named workload the installed packages register (entry-point group ``crossbar.workloads``, each
    entry point a dict name -> factory). Loaded on first use, so importing the sweep engine imports none of
    them; raises ConfigError when a registering package fails to import or registers a name twice."""
    found: dict[str, Callable[..., Workload]] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            table = point.load()
        except Exception as exc:  # noqa: BLE001 (whatever the package raises, its workloads are unusable)
            raise ConfigError(f"workloads of {point.value!r} cannot be loaded ({type(exc).__name__}: {exc})") from exc
        for name, builder in dict(table).items():
            if name in found:
                raise ConfigError(f"workload {name!r} is registered twice (again by {point.value!r})")
            found[name] = builder
    return found


@dataclass(frozen=True)
class WorkloadRef:
    """A workload as a spec names it: registry name or ``module:function`` reference, keyword arguments as
    canonical JSON, and the folder relative file references resolve against. Plain data: it travels to
    workers, which build the workload themselves."""

    name: str
    args_json: str = "{}"
    base_dir: str = "."

    @property
    def args(self) -> dict[str, Any]:
        return json.loads(self.args_json)

    @property
    def label(self) -> str:
        """How results name it: the name, with its arguments when there are any."""
        return self.name if self.args_json == "{}" else f"{self.name} {self.args_json}"


def factory(ref: WorkloadRef) -> Callable[..., Any]:
    """The function that builds the workload; raises ConfigError naming what is missing."""
    named = registered()
    if ref.name in named:
        return named[ref.name]
    if ":" not in ref.name:
        raise ConfigError(
            f"unknown workload {ref.name!r}; registered: {', '.join(sorted(named)) or 'none'}, "
            "or name a function as package.module:function or path/file.py:function"
        )
    target, _, function = ref.name.rpartition(":")
    module = _module_from_file(Path(ref.base_dir) / target) if target.endswith(".py") else _import(target)
    builder = getattr(module, function, None)
    if not callable(builder):
        raise ConfigError(f"workload {ref.name!r}: {target} has no function {function!r}")
    return builder


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 (whatever the module raises, the spec names an unusable workload)
        raise ConfigError(f"workload module {name!r} cannot be imported ({type(exc).__name__}: {exc})") from exc


def _module_from_file(path: Path) -> Any:
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"workload file {path} does not exist")
    name = "crossbar_sweep_workload_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 (whatever the file raises, the spec names an unusable workload)
            del sys.modules[name]
            raise ConfigError(f"workload file {path} cannot be imported ({type(exc).__name__}: {exc})") from exc
    return sys.modules[name]


def check_workload(ref: WorkloadRef) -> None:
    """Resolve the factory and check the spec's arguments fit its signature, without building anything."""
    builder = factory(ref)
    try:
        inspect.signature(builder).bind(**ref.args)
    except TypeError as exc:
        raise ConfigError(f"workload {ref.name!r}: arguments {ref.args} do not fit {builder.__name__}: {exc}") from exc


@functools.lru_cache(maxsize=4)
def build(ref: WorkloadRef) -> Workload:
    """The workload of ``ref``, built once per process (workers reuse it across points)."""
    made = factory(ref)(**ref.args)
    workload = made if isinstance(made, Workload) else Workload(*made)
    if not isinstance(workload.model, nn.Module):
        raise TypeError(f"workload {ref.name!r}: model is a {type(workload.model).__name__}, not a torch module")
    if workload.metric not in METRICS:
        raise ConfigError(f"workload {ref.name!r}: unknown metric {workload.metric!r}; known: {', '.join(METRICS)}")
    if len(workload.inputs) != len(workload.targets):
        raise ValueError(f"workload {ref.name!r}: {len(workload.inputs)} inputs but {len(workload.targets)} targets")
    workload.model.eval()
    return workload


def evaluate(model: nn.Module, workload: Workload) -> float:
    """The workload's metric of ``model`` (float or compiled) over all its inputs, in fixed chunks."""
    size = workload.batch_size or len(workload.inputs)
    with torch.no_grad():
        outputs = torch.cat([model(chunk) for chunk in workload.inputs.split(size)])
    return METRICS[workload.metric](outputs, workload.targets)


@functools.lru_cache(maxsize=4)
def float_metric(ref: WorkloadRef) -> float:
    """The metric of the float model itself: the reference every chip point is compared with."""
    workload = build(ref)
    return evaluate(workload.model, workload)
