"""``crossbar.compile``: a copy of a torch model with every linear layer on simulated tiles."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from crossbar import hpd as hpd_transform
from crossbar.config import ChipConfig, ConfigError
from crossbar.layers import TiledConv1d, TiledLinear

DigitalPlacement = Iterable[str] | Mapping[str, Mapping[str, int | None]]


def layer_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th mapped layer of a chip instance ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


# Modules that hold matrix weights but compute with them directly, not through child nn.Linear modules.
_DIGITAL_ONLY = (nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase, nn.Bilinear, nn.Transformer)


def is_depthwise(module: nn.Module) -> bool:
    """A depthwise convolution (one filter per channel, as in Mamba): per-channel digital work, not a matrix
    product, so it stays digital by design and without a warning."""
    return isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module.in_channels == module.groups > 1


def unsupported_reason(module: nn.Module) -> str | None:
    """Why a module with matrix weights is not mapped onto tiles, for a warning: None when it is mapped, has no
    matrix weights, or is digital by design (a depthwise convolution, see ``is_depthwise``)."""
    if is_depthwise(module):
        return None
    if isinstance(module, _DIGITAL_ONLY):
        return "it computes with its weight matrices directly; only nn.Linear and 1x1 nn.Conv1d are mapped"
    if isinstance(module, nn.Conv2d | nn.Conv3d | nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        return "only nn.Linear and 1x1 nn.Conv1d are mapped"
    if not isinstance(module, nn.Conv1d):
        return None
    if module.kernel_size != (1,):
        return f"kernel size {module.kernel_size[0]} (only 1x1 convolutions are matrix products)"
    if module.groups != 1:
        return f"groups={module.groups}"
    if module.stride != (1,) or module.padding not in ((0,), "valid"):
        return "stride or padding other than 1 / 0"
    return None


def _inside_digital_only(name: str, modules: dict[str, nn.Module]) -> bool:
    """True for a submodule of a module in _DIGITAL_ONLY (e.g. MultiheadAttention.out_proj)."""
    parts = name.split(".")
    return any(isinstance(modules[".".join(parts[:i])], _DIGITAL_ONLY) for i in range(1, len(parts)))


def _mappable(module: nn.Module) -> bool:
    """An nn.Linear or a 1x1 nn.Conv1d that ``compile`` puts on tiles (when not inside a digital-only module)."""
    return isinstance(module, nn.Linear | nn.Conv1d) and not is_depthwise(module) and unsupported_reason(module) is None


def mapped_layers(model: nn.Module) -> list[str]:
    """Names of the layers ``compile`` puts on tiles (nn.Linear, 1x1 nn.Conv1d), in model order."""
    modules = dict(model.named_modules())
    return [name for name, module in modules.items() if _mappable(module) and not _inside_digital_only(name, modules)]


def _tiled(module: nn.Module, chip: ChipConfig, seed: int, digital: Mapping[str, int | None] | None) -> TiledLinear:
    placement = "digital" if digital is not None else "analog"
    bits = dict(digital or {})
    unknown = set(bits) - {"weight_bits", "input_bits"}
    if unknown:
        raise ConfigError(f"digital placement: unknown option {sorted(unknown)[0]!r} (weight_bits, input_bits)")
    weight_bits, input_bits = bits.get("weight_bits"), bits.get("input_bits")
    if isinstance(module, nn.Conv1d):
        return TiledConv1d(module.weight[:, :, 0], module.bias, chip, seed, placement, weight_bits, input_bits)
    return TiledLinear(module.weight, module.bias, chip, seed, placement, weight_bits, input_bits)


def _resolve_chip(chip: ChipConfig | str | os.PathLike) -> ChipConfig:
    return chip if isinstance(chip, ChipConfig) else ChipConfig.load(chip)


def compile(  # noqa: A001 (the name users expect: crossbar.compile)
    model: nn.Module,
    chip: ChipConfig | str | os.PathLike = "default",
    seed: int = 0,
    digital: DigitalPlacement | None = None,
    calibration_inputs: torch.Tensor | tuple | None = None,
    hpd: hpd_transform.HPDSpec | None = None,
) -> nn.Module:
    """A new module in which every nn.Linear and 1x1 nn.Conv1d of ``model`` computes on tiles.

    ``chip``: a ChipConfig, a preset name or a JSON path. ``seed``: the chip instance (programming error,
    drift and per-forward noise all derive from it). ``digital``: names of layers (as in
    ``model.named_modules()``) to place on exact digital tiles instead, or a mapping name ->
    ``{"weight_bits": int, "input_bits": int}`` for integer digital tiles. ``calibration_inputs``: sample
    model inputs (a tensor or a tuple of positional arguments) for calibrated DAC/ADC ranges. ``hpd``:
    layers to split by hybrid projection decomposition (``crossbar.hpd.apply``: ``"auto"``, names such as
    ``"blocks.-1.mixer.out_proj"``, or name -> options); each one's analog factor goes on tiles and its other
    factor on an exact (or integer) digital tile. The original model is not modified. Every other module
    stays as it is (digital).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"crossbar.compile needs a torch.nn.Module, got {type(model).__name__}")
    chip = _resolve_chip(chip)
    digital_map: dict[str, Mapping[str, int | None]] = (
        {name: dict(opts) for name, opts in digital.items()}
        if isinstance(digital, Mapping)
        else {name: {} for name in (digital or [])}
    )
    needs_calibration = "calibrated" in (chip.adc.mode, chip.dac.mode)
    if needs_calibration and calibration_inputs is None:
        raise ConfigError(
            "adc.mode / dac.mode is 'calibrated': pass sample inputs, "
            "crossbar.compile(model, chip, calibration_inputs=x)"
        )
    compiled = _copy_sharing_mapped_weights(model)
    hpd_digital = hpd_transform.apply(compiled, hpd) if hpd is not None else {}
    for name, opts in hpd_digital.items():
        if digital_map.setdefault(name, opts) is not opts:
            raise ConfigError(f"digital placement: {name} is an HPD factor; set its bits in hpd=, not digital=")
    names = dict(compiled.named_modules())
    missing = sorted(set(digital_map) - set(names))
    if missing:
        raise ConfigError(f"digital placement: no module named {missing[0]!r} in the model")
    both = [n for n in digital_map if isinstance(names[n], hpd_transform.HPDLinear)]
    if both:
        raise ConfigError(f"{both[0]}: named in both digital= and hpd=; choose one placement")

    index, mapped = 0, 0
    for name, module in list(compiled.named_modules()):
        if _inside_digital_only(name, names):
            continue
        reason = unsupported_reason(module)
        if reason is not None:
            warnings.warn(f"crossbar.compile: {name} ({type(module).__name__}) stays digital: {reason}", stacklevel=2)
            continue
        if not _mappable(module):
            continue
        tiled = _tiled(module, chip, layer_seed(seed, index), digital_map.get(name))
        # An HPD digital factor draws no noise and takes no seed: the other layers keep the seeds they have
        # without HPD, so a chip instance differs from the plain mapping only in the split layer.
        index += name not in hpd_digital
        mapped += 1
        _set_submodule(compiled, name, tiled)
    if mapped == 0:
        raise ValueError("crossbar.compile: the model has no nn.Linear or 1x1 nn.Conv1d layer to map onto tiles")
    if needs_calibration:
        calibrate(compiled, calibration_inputs)
    return compiled


def _copy_sharing_mapped_weights(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, except the parameters that only one mapped layer holds (a layer that occurs
    once): those stay shared with ``model`` until ``compile`` replaces the layer by its tiles, which take their
    own copy. So compiling never holds three copies of the weights (model, deep copy, tiles) at once."""
    occurrences: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        occurrences[id(module)] = occurrences.get(id(module), 0) + 1
        for parameter in module.parameters(recurse=False):
            occurrences[id(parameter)] = occurrences.get(id(parameter), 0) + 1
    modules = dict(model.named_modules())
    memo: dict[int, object] = {}
    for name in mapped_layers(model):
        if occurrences[id(modules[name])] == 1:
            memo.update({id(p): p for p in modules[name].parameters(recurse=False) if occurrences[id(p)] == 1})
    return copy.deepcopy(model, memo)


def calibrate(compiled: nn.Module, inputs: torch.Tensor | tuple) -> None:
    """Set calibrated DAC/ADC ranges of every tiled layer from one forward pass over sample ``inputs``.

    Each layer calibrates on the inputs it receives from the layers before it, as they run on the chip.
    """
    layers = [m for m in compiled.modules() if isinstance(m, TiledLinear)]
    hooks = [layer.register_forward_pre_hook(lambda mod, args: mod.calibrate(args[0])) for layer in layers]
    try:
        with torch.no_grad():
            compiled(*inputs) if isinstance(inputs, tuple) else compiled(inputs)
    finally:
        for hook in hooks:
            hook.remove()


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    if name == "":
        raise ValueError("crossbar.compile: the model itself is a single linear layer; wrap it in nn.Sequential")
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
