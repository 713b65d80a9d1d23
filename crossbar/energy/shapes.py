"""Digital work of standard torch modules, counted from the shapes of one call's inputs and output.

Each function returns operation counts of one forward call of that module: keys among ``"add"``, ``"mul"``,
``"mac"``, ``"nonlinear"`` (exp, sigmoid, tanh, rsqrt, ...) and ``"memory_bytes"`` (data moved through a
buffer), the same keys as the ``digital_ops`` protocol (docs/energy.md). ``None``: a module type not known here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_FREE = (nn.Identity, nn.Dropout, nn.Flatten, nn.Unflatten)
# Comparison or select per element: priced as one add.
_COMPARE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Threshold, nn.PReLU)
# A transcendental per element.
_NONLINEAR = (nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.Softplus, nn.ELU, nn.SELU, nn.Mish, nn.LogSigmoid)
_SOFTMAX = (nn.Softmax, nn.LogSoftmax)
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.RMSNorm)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _numel(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, tuple | list):
        return sum(_numel(v) for v in value)
    return 0


def standard_ops(module: nn.Module, inputs: tuple, output: object, value_bytes: int) -> dict[str, float] | None:
    """Operation counts of one call of a standard module (``value_bytes``: bytes per activation value)."""
    n_out = _numel(output)
    n_in = _numel(inputs[:1])
    if isinstance(module, _FREE):
        return {}
    if isinstance(module, _COMPARE):
        return {"add": n_out}
    if isinstance(module, _NONLINEAR):
        return {"nonlinear": n_out}
    if isinstance(module, _SOFTMAX):  # exp, sum, one reciprocal per row, scale
        return {"nonlinear": n_out, "add": n_out, "mul": n_out}
    if isinstance(module, _NORMS):  # mean and variance (add, mul-add), normalise (add, mul), affine (mul, add)
        return {"add": 3 * n_out, "mul": 3 * n_out, "nonlinear": _norm_groups(module, output)}
    if isinstance(module, _BATCHNORMS):  # inference: a folded per-channel affine
        return {"mul": n_out, "add": n_out}
    if isinstance(module, _POOLS):
        return {"add": n_in}
    if isinstance(module, _CONVS):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        ops: dict[str, float] = {"mac": n_out * per_output}
        if module.bias is not None:
            ops["add"] = n_out
        return ops
    if isinstance(module, nn.Linear):  # a linear layer left digital (inside a module crossbar does not map)
        return {"mac": n_out * module.in_features, "add": n_out if module.bias is not None else 0}
    if isinstance(module, nn.Embedding):
        return {"memory_bytes": n_out * value_bytes}
    return None


def _norm_groups(module: nn.Module, output: torch.Tensor) -> int:
    """How many groups a normalisation layer normalises (one reciprocal square root each)."""
    if isinstance(module, nn.LayerNorm | nn.RMSNorm):
        return output.numel() // max(1, math.prod(module.normalized_shape))
    if isinstance(module, nn.GroupNorm):
        return output.shape[0] * module.num_groups
    return output.shape[0] * output.shape[1]  # instance norm: per sample and channel
