"""``crossbar.compile``: a copy of a torch model with every matrix product on simulated tiles.

How a module maps is looked up in one table, ``CONVERTERS``: module class -> ``converter(module, make_tiled)``,
which returns the module's replacement in the compiled model (found along the class's MRO, so an entry for
``nn.RNNBase`` covers ``nn.LSTM``). ``make_tiled(weight, bias, name)`` programs ONE weight matrix on tiles and
returns a ``crossbar.layers.TiledLinear`` computing ``x @ weight.T + bias`` over the last dimension
(``weight`` (out, in), ``bias`` (out,) or None); call the returned module (never its tiles directly) so that
calibration, energy counting and the tile-call guard of the tests see every use. Everything per matrix is
decided here: the chip instance's seed (one per ``make_tiled`` call, in model order), analog or digital
placement (``digital=`` names the matrix's full name ``"<module>.<name>"`` or the whole module), and a
weight tensor seen before (a tied weight) reuses the programmed tiles. ``name`` is the matrix's name inside
the module: ``""`` for a module's only matrix, else e.g. ``"in_proj"`` or ``"weight_ih_l0"``. Keyword
options: ``groups`` (a block-diagonal weight, each group its own matrix) and ``transposed`` (weight stored
(in, out), as GPT-2's ``Conv1D``). A converter that leaves its module digital raises ``StaysDigital(reason)``
(``by_design=True``: expected, no warning; both are listed by ``crossbar.report``).

Adding a layer type: ``register_layer(cls, weight_of=..., bias_of=...)`` for a matrix product over the last
dimension under another name; ``register_converter(cls, converter)`` for anything with structure (attention,
recurrent layers; crossbar/attention.py and crossbar/recurrent.py plug in here).

The walk visits every module once by identity: a module registered under two names, or shared by two parents,
is converted once and the same replacement is set under every name.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from crossbar import fastpath
from crossbar import hpd as hpd_transform
from crossbar import progress as progress_bars
from crossbar.attention import convert_attention
from crossbar.config import ChipConfig, ConfigError
from crossbar.conv import ConvGeometry, TiledConvTranspose, conv_class, is_depthwise
from crossbar.layers import TiledLinear
from crossbar.recurrent import convert_recurrent

DigitalPlacement = Iterable[str] | Mapping[str, Mapping[str, int | None]]


class MakeTiled(Protocol):
    """Programs one weight matrix of the module being converted (see the module docstring)."""

    def __call__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        name: str = "",
        *,
        groups: int = 1,
        transposed: bool = False,
        layer: type[TiledLinear] = TiledLinear,
        **options: object,
    ) -> TiledLinear: ...


Converter = Callable[[nn.Module, MakeTiled], nn.Module]


class StaysDigital(Exception):  # noqa: N818 (a decision, not an error)
    """Raised by a converter: the module stays digital, for ``reason``; ``by_design`` silences the warning."""

    def __init__(self, reason: str, by_design: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.by_design = reason, by_design


# The attribute of a module left digital that holds the reason (``crossbar.report`` shows it).
DIGITAL_REASON = "crossbar_digital_reason"


def _mark_digital(module: nn.Module, name: str, reason: str) -> None:
    """Record ``reason`` on a module that stays digital, and on its descendants (which it computes with)."""
    setattr(module, DIGITAL_REASON, reason)
    for child_name, child in module.named_modules():
        if child_name:
            setattr(child, DIGITAL_REASON, f"part of {name or 'the model'}, which stays digital")


def layer_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th mapped matrix of a chip instance ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


# ------------------------------------------------------------------------------------------- the converters


def convert_linear(module: nn.Linear, make_tiled: MakeTiled) -> TiledLinear:
    return make_tiled(module.weight, module.bias)


def convert_conv(module: nn.Conv1d | nn.Conv2d | nn.Conv3d, make_tiled: MakeTiled) -> TiledLinear:
    """Any kernel, stride, padding (mode), dilation and groups: see ``crossbar.conv``."""
    if is_depthwise(module):
        raise StaysDigital("depthwise convolution: per-channel work, not a matrix product", by_design=True)
    geometry = ConvGeometry.of(module)
    return make_tiled(module.weight, module.bias, groups=module.groups, layer=conv_class(module), geometry=geometry)


def _reads_weights_directly(module: nn.Module, make_tiled: MakeTiled) -> nn.Module:
    raise StaysDigital("it computes with its weight matrices directly; no converter is registered for it yet")


def convert_transposed_conv(module: nn.modules.conv._ConvTransposeNd, make_tiled: MakeTiled) -> TiledLinear:
    """One MVM of the (out/G * kernel) x (in/G) matrix per input position, then a digital overlap-add."""
    if module.padding_mode != "zeros":
        raise StaysDigital(f"padding_mode {module.padding_mode!r} (torch supports only zeros for it)")
    geometry = ConvGeometry.of(module)
    return make_tiled(
        module.weight,
        module.bias,
        groups=module.groups,
        layer=TiledConvTranspose,
        geometry=geometry,
        output_padding=module.output_padding,
    )


def _lookup(module: nn.Module, make_tiled: MakeTiled) -> nn.Module:
    raise StaysDigital("a lookup: a digital read of one row, not a matrix product", by_design=True)


CONVERTERS: dict[type[nn.Module] | str, Converter] = {
    nn.Linear: convert_linear,
    nn.Conv1d: convert_conv,
    nn.Conv2d: convert_conv,
    nn.Conv3d: convert_conv,
    nn.MultiheadAttention: convert_attention,
    nn.RNNBase: convert_recurrent,
    nn.RNNCellBase: convert_recurrent,
    nn.Bilinear: _reads_weights_directly,
    nn.ConvTranspose1d: convert_transposed_conv,
    nn.ConvTranspose2d: convert_transposed_conv,
    nn.ConvTranspose3d: convert_transposed_conv,
    nn.Embedding: _lookup,
    nn.EmbeddingBag: _lookup,
}
# Single-matrix layers with a ``weight`` (``mapped_layers`` lists them): built in or from ``register_layer``.
# The value: how to find the layer's (out, in) matrix, as a view of its parameter.
_MATRIX_LAYERS: dict[type[nn.Module] | str, Callable[[nn.Module], torch.Tensor]] = {
    cls: lambda m: m.weight.reshape(m.weight.shape[0], -1) for cls in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
}


def _class_key(cls: type[nn.Module] | str) -> type[nn.Module] | str:
    """A class, or the dotted name of one (``"transformers.pytorch_utils.Conv1D"``: registered without importing
    its package, which stays optional)."""
    if isinstance(cls, str) and "." in cls:
        return cls
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        return cls
    raise TypeError(f"expected an nn.Module subclass or its dotted name 'package.module.Class', got {cls!r}")


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_converter(cls: type[nn.Module] | str, converter: Converter) -> None:
    """Map modules of ``cls`` (a class or its dotted name; subclasses without an entry of their own too) with
    ``converter(module, make_tiled) -> replacement`` (see the module docstring)."""
    key = _class_key(cls)
    if not callable(converter):
        raise TypeError(f"register_converter: converter must be callable, got {converter!r}")
    CONVERTERS[key] = converter


def register_layer(
    cls: type[nn.Module] | str,
    weight_of: Callable[[nn.Module], torch.Tensor] = lambda m: m.weight,
    bias_of: Callable[[nn.Module], torch.Tensor | None] = lambda m: getattr(m, "bias", None),
    transposed: bool = False,
) -> None:
    """Map a layer type whose forward is ``x @ W.T + b`` over the last dimension, as an ``nn.Linear``.

    ``cls``: the class, or its dotted name (``"package.module.Class"``) to register it without importing its
    package. ``weight_of(module)``: its weight, (out, in), or (in, out) with ``transposed=True`` (GPT-2's
    ``Conv1D`` computes ``x @ weight + bias``); ``bias_of(module)``: its bias (out,) or None. The compiled layer
    keeps the same parameters (names and layout), so a state dict loads into either model.
    """
    name = cls if isinstance(cls, str) else getattr(cls, "__name__", repr(cls))

    def convert(module: nn.Module, make_tiled: MakeTiled) -> TiledLinear:
        weight = weight_of(module)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ConfigError(f"register_layer({name}): weight_of must return a 2-D tensor, got {type(weight)}")
        return make_tiled(weight, bias_of(module), transposed=transposed)

    register_converter(cls, convert)
    _MATRIX_LAYERS[_class_key(cls)] = (lambda m: weight_of(m).t()) if transposed else weight_of


def _entry(table: Mapping | set, module: nn.Module) -> type | str | None:
    """The key of ``table`` for ``module``'s class or its nearest base class (by class or dotted name)."""
    for cls in type(module).__mro__:
        for key in (cls, _dotted(cls)):
            if key in table:
                return key
    return None


# Hugging Face GPT-2 (and kin): ``Conv1D`` is a Linear storing its weight (in, out); registered by name, so
# ``transformers`` stays an optional package.
register_layer("transformers.pytorch_utils.Conv1D", transposed=True)


def converter_for(module: nn.Module) -> Converter | None:
    """The converter of ``module``'s class, or of its nearest base class that has one."""
    key = _entry(CONVERTERS, module)
    return None if key is None else CONVERTERS[key]


def _own_matrices(module: nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters(recurse=False) if p.dim() >= 2]


# ------------------------------------------------------------------------------------------------- the walk


@dataclass
class _Walk:
    """State of one ``compile``: the seeds handed out, placements, modules and weights already converted."""

    chip: ChipConfig
    seed: int
    digital: dict[str, Mapping[str, int | None]]
    hpd_digital: dict[str, dict[str, int | None]]
    index: int = 0
    mapped: int = 0
    done: dict[int, nn.Module] = field(default_factory=dict)
    tied: dict[tuple, tuple[torch.Tensor, TiledLinear]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    matrices: set[str] = field(default_factory=set)  # full names of the matrices programmed, for digital=
    bar: tqdm | None = None  # counts the matrices programmed (crossbar.progress)

    def make_tiled_for(self, module_name: str) -> MakeTiled:
        def make_tiled(
            weight: torch.Tensor,
            bias: torch.Tensor | None,
            name: str = "",
            *,
            groups: int = 1,
            transposed: bool = False,
            layer: type[TiledLinear] = TiledLinear,
            **options: object,
        ) -> TiledLinear:
            full = ".".join(part for part in (module_name, name) if part)
            self.matrices.add(full)
            placed = self.digital.get(full, self.digital.get(module_name))
            placement = "digital" if placed is not None else "analog"
            bits = dict(placed or {})
            unknown = set(bits) - {"weight_bits", "input_bits"}
            if unknown:
                raise ConfigError(f"digital placement: unknown option {sorted(unknown)[0]!r} (weight_bits, input_bits)")
            key = (id(weight), layer._matrix, groups, transposed, placement, tuple(sorted(bits.items())))
            seed = layer_seed(self.seed, self.index)
            # An HPD digital factor draws no noise and takes no seed: the other layers keep the seeds they have
            # without HPD, so a chip instance differs from the plain mapping only in the split layer.
            self.index += full not in self.hpd_digital
            self.mapped += 1
            # A parameter (alive as long as the model) seen before is a tied weight: one programmed matrix.
            shared = self.tied[key][1] if key in self.tied and self.tied[key][0] is weight else None
            tiled = layer(
                weight,
                bias,
                self.chip,
                seed if shared is None else shared.seed,
                placement,
                bits.get("weight_bits"),
                bits.get("input_bits"),
                groups=groups,
                transposed=transposed,
                shared=shared,
                **options,
            )
            if isinstance(weight, nn.Parameter):
                self.tied.setdefault(key, (weight, tiled))
            if self.bar is not None:
                self.bar.set_postfix_str(full, refresh=False)
                self.bar.update(1)
            return tiled

        return make_tiled

    def visit(self, module: nn.Module, name: str, declared: bool = False) -> nn.Module:
        """The replacement of ``module`` (itself, converted in place, when it has no converter). ``declared``:
        inside a module that declares its own digital work (``digital_ops``, docs/energy.md), such as an SSM
        mixer: its parameters are that work (digital, counted), not a matrix left behind silently."""
        if id(module) in self.done:
            return self.done[id(module)]
        converter = converter_for(module)
        replacement = module
        if converter is not None:
            try:
                replacement = converter(module, self.make_tiled_for(name))
                if isinstance(replacement, TiledLinear) and not isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
                    replacement.origin = type(module).__name__  # a registered layer type, for reports
            except StaysDigital as why:
                _mark_digital(module, name, why.reason)
                if not why.by_design:
                    self.warnings.append(f"{name or '(model)'} ({type(module).__name__}) stays digital: {why.reason}")
        else:
            own = _own_matrices(module)
            declared = declared or callable(getattr(module, "digital_ops", None))
            if own and declared:
                setattr(module, DIGITAL_REASON, "its own digital computation (declared by digital_ops)")
            elif own:
                reason = (
                    f"no converter for {type(module).__name__} (its {', '.join(own)}); if it is a matrix "
                    "product, crossbar.register_layer maps it"
                )
                setattr(module, DIGITAL_REASON, reason)
                self.warnings.append(f"{name or '(model)'} stays digital: {reason}")
            for child_name, child in list(module._modules.items()):  # every name, shared children included
                if child is not None:
                    new = self.visit(child, f"{name}.{child_name}" if name else child_name, declared)
                    if new is not child:
                        module._modules[child_name] = new
        self.done[id(module)] = replacement
        return replacement


def layer_matrix(module: nn.Module) -> torch.Tensor:
    """The (out, in) weight matrix of a layer ``mapped_layers`` lists, as a view of its parameter (a
    convolution's kernel flattened per output channel: groups side by side)."""
    key = _entry(_MATRIX_LAYERS, module)
    if key is None:
        raise TypeError(f"{type(module).__name__} is not a single-matrix layer (register_layer)")
    return _MATRIX_LAYERS[key](module)


def mapped_layers(model: nn.Module) -> list[str]:
    """Names of the single-matrix layers ``compile`` puts on tiles (nn.Linear, convolutions other than
    depthwise, registered layer types), in model order; the matrices of attention and recurrent layers are
    not listed."""
    modules = dict(model.named_modules())
    names = []
    for name, module in modules.items():
        parts = name.split(".")
        ancestors = [".".join(parts[:i]) for i in range(len(parts))] if name else []
        if any(converter_for(modules[a]) is not None for a in ancestors):
            continue  # converted with its parent (e.g. MultiheadAttention.out_proj)
        if _entry(_MATRIX_LAYERS, module) is not None and not is_depthwise(module):
            names.append(name)
    return names


def _resolve_chip(chip: ChipConfig | str | os.PathLike) -> ChipConfig:
    return chip if isinstance(chip, ChipConfig) else ChipConfig.load(chip)


def compile(  # noqa: A001 (the name users expect: crossbar.compile)
    model: nn.Module,
    chip: ChipConfig | str | os.PathLike = "default",
    seed: int = 0,
    digital: DigitalPlacement | None = None,
    calibration_inputs: torch.Tensor | tuple | None = None,
    hpd: hpd_transform.HPDSpec | None = None,
    progress: bool | None = None,
) -> nn.Module:
    """A new module in which every matrix product of ``model`` computes on tiles (``CONVERTERS``).

    ``model`` may itself be a single layer (``compile(nn.Linear(...))`` returns the tiled layer). ``chip``: a
    ChipConfig, a preset name or a JSON path. ``seed``: the chip instance (programming error, drift and
    per-forward noise all derive from it). ``digital``: names of layers (as in ``model.named_modules()``) or
    of single matrices (``"<module>.<name>"``, see the module docstring) to place on exact digital tiles
    instead, or a mapping name -> ``{"weight_bits": int, "input_bits": int}`` for integer digital tiles.
    ``calibration_inputs``: sample model inputs (a tensor or a tuple of positional arguments) for calibrated
    DAC/ADC ranges. ``hpd``: layers to split by hybrid projection decomposition (``crossbar.hpd.apply``:
    ``"auto"``, names such as ``"blocks.-1.mixer.out_proj"``, or name -> options); each one's analog factor
    goes on tiles and its other factor on an exact (or integer) digital tile. The original model is not
    modified. Every other module stays as it is (digital); one with a weight matrix and no converter is
    named in a warning. ``progress``: bars for the matrices programmed and their IR-drop matrices on standard
    error (None: when it is a terminal; ``crossbar.progress``).
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
    names = dict(compiled.named_modules(remove_duplicate=False))
    both = [n for n in digital_map if isinstance(names.get(n), hpd_transform.HPDLinear)]
    if both:
        raise ConfigError(f"{both[0]}: named in both digital= and hpd=; choose one placement")

    bar = progress_bars.bar(desc="programming tiles", unit="matrix", progress=progress)
    with progress_bars.inherit(progress), bar:
        walk = _Walk(chip, seed, digital_map, hpd_digital, bar=bar)
        compiled = walk.visit(compiled, "")
    missing = sorted(set(digital_map) - set(names) - walk.matrices)  # a matrix of a converted module counts
    if missing:
        raise ConfigError(
            f"digital placement: no module named {missing[0]!r} in the model, nor a matrix of a converted module"
        )
    for message in walk.warnings:
        warnings.warn(f"crossbar.compile: {message}", stacklevel=2)
    if walk.mapped == 0:
        raise ValueError(
            "crossbar.compile: the model has no nn.Linear, convolution or other matrix product to map onto tiles "
            "(crossbar.compiler.CONVERTERS; crossbar.register_layer adds a layer type)"
        )
    _own_parameters(compiled, model)
    fastpath.guard(compiled)
    if needs_calibration:
        calibrate(compiled, calibration_inputs)
    return compiled


def _copy_sharing_mapped_weights(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, except the parameters that only one mapped layer holds (a layer that occurs
    once): those stay shared with ``model`` while their tiles are programmed, and ``_own_parameters`` copies
    them after the walk. So programming never holds a deep copy of the weights beside the model and the tiles."""
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


def _own_parameters(compiled: nn.Module, model: nn.Module) -> None:
    """Give ``compiled`` its own copy of every parameter it still shares with ``model`` (a mapped layer's weight,
    kept by its tiled layer so that ties survive): fine-tuning the compiled model must never move the user's
    float model. A parameter tied across several places of ``compiled`` stays tied: one copy serves them all."""
    originals = {id(p) for p in model.parameters()}
    copies: dict[int, nn.Parameter] = {}
    for module in compiled.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None and id(parameter) in originals:
                if id(parameter) not in copies:
                    copies[id(parameter)] = nn.Parameter(parameter.detach().clone(), parameter.requires_grad)
                module._parameters[name] = copies[id(parameter)]


def calibrate(compiled: nn.Module, inputs: torch.Tensor | tuple) -> None:
    """Set calibrated DAC/ADC ranges of every tiled layer from one forward pass over sample ``inputs``.

    Each layer calibrates on the inputs it receives from the layers before it, as they run on the chip. A layer
    called several times in the pass (a recurrent layer's hidden-to-hidden matrix, once per time step; a
    shared module) calibrates on each call's input as it comes, then, after the pass, once on all of them.
    """
    layers = [m for m in compiled.modules() if isinstance(m, TiledLinear)]
    seen: dict[TiledLinear, list[torch.Tensor]] = {}

    def calibrate_on(layer: TiledLinear, args: tuple) -> None:
        seen.setdefault(layer, []).append(args[0].detach())
        layer.calibrate(args[0])

    hooks = [layer.register_forward_pre_hook(calibrate_on) for layer in layers]
    try:
        with torch.no_grad():
            compiled(*inputs) if isinstance(inputs, tuple) else compiled(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    for layer, calls in seen.items():
        if len(calls) > 1 and all(x.shape[1:] == calls[0].shape[1:] for x in calls):
            layer.calibrate(torch.cat(calls))
