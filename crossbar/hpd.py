"""Hybrid projection decomposition (HPD): a linear layer split by SVD into an analog and a digital factor.

After Feng et al., arXiv 2508.11935 (only the abstract is public; every choice it leaves open is a parameter
here). A weight W (out, in) with SVD ``W = U S V^T`` (rank r = min(out, in), or truncated to ``rank``) becomes
two linear layers applied one after the other, ``y = outer(inner(x))``:

- ``orientation="us_analog"`` (the paper's): inner = V^T (r, in) on an exact digital tile, outer = U S (out, r)
  on analog tiles;
- ``orientation="svt_analog"``: inner = S V^T (r, in) on analog tiles, outer = U (out, r) digital.

The bias stays with ``outer``. Without truncation the pair equals W to float32 rounding; with ``rank=k`` it is
the best rank-k approximation, whose error is the tail of singular values (Eckart-Young): spectral norm
``s[k]``, Frobenius norm ``sqrt(sum(s[k:]**2))``. Digital cost per input vector: ``rank * in`` MACs
(us_analog) or ``out * rank`` MACs (svt_analog), against ``out * in`` for the whole layer digital.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from crossbar.config import ConfigError

ORIENTATIONS = ("us_analog", "svt_analog")


class HPDLinear(nn.Module):
    """``y = outer(inner(x))``: x (..., in_features) -> (..., out_features); one factor analog, one digital.

    ``digital_factor`` names the child (``"inner"`` or ``"outer"``) that ``crossbar.compile`` places on an
    exact digital tile; the other goes on analog tiles. ``singular_values`` (rank,) is kept for reports.
    """

    def __init__(self, inner: nn.Linear, outer: nn.Linear, orientation: str, singular_values: torch.Tensor) -> None:
        super().__init__()
        if orientation not in ORIENTATIONS:
            raise ValueError(f"HPD orientation must be one of {', '.join(ORIENTATIONS)} (got {orientation!r})")
        self.inner, self.outer, self.orientation = inner, outer, orientation
        self.register_buffer("singular_values", singular_values.detach().clone())
        self.in_features, self.out_features = inner.in_features, outer.out_features
        self.rank = inner.out_features

    @property
    def digital_factor(self) -> str:
        return "inner" if self.orientation == "us_analog" else "outer"

    @property
    def analog_factor(self) -> str:
        return "outer" if self.orientation == "us_analog" else "inner"

    def digital_macs(self) -> int:
        """Multiply-accumulates of the digital factor per input vector."""
        factor = getattr(self, self.digital_factor)
        return factor.in_features * factor.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.inner(x))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, orientation={self.orientation}"


def decompose(linear: nn.Linear, orientation: str = "us_analog", rank: int | None = None) -> HPDLinear:
    """The HPD of an ``nn.Linear``: SVD in float64, factors in the layer's dtype; the layer is not modified.

    ``rank``: keep the ``rank`` largest singular values (1 .. min(out, in)); None keeps all (exact).
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"HPD decomposes nn.Linear layers, got {type(linear).__name__}")
    if orientation not in ORIENTATIONS:
        raise ValueError(f"HPD orientation must be one of {', '.join(ORIENTATIONS)} (got {orientation!r})")
    weight = linear.weight.detach()
    if not torch.isfinite(weight).all():
        raise ValueError("HPD: the layer's weight contains NaN or inf")
    full = min(weight.shape)
    if rank is None:
        rank = full
    if not (isinstance(rank, int) and not isinstance(rank, bool) and 1 <= rank <= full):
        raise ValueError(f"HPD rank must be an integer from 1 to min(out, in) = {full} (got {rank!r})")
    u, s, vt = torch.linalg.svd(weight.to(torch.float64), full_matrices=False)
    u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    if orientation == "us_analog":
        inner_weight, outer_weight = vt, u * s
    else:
        inner_weight, outer_weight = s[:, None] * vt, u
    dtype = weight.dtype
    inner = nn.Linear(linear.in_features, rank, bias=False, dtype=dtype)
    outer = nn.Linear(rank, linear.out_features, bias=linear.bias is not None, dtype=dtype)
    with torch.no_grad():
        inner.weight.copy_(inner_weight.to(dtype))
        outer.weight.copy_(outer_weight.to(dtype))
        if linear.bias is not None:
            outer.bias.copy_(linear.bias.detach())
    return HPDLinear(inner, outer, orientation, s.to(dtype))


def resolve_name(model: nn.Module, name: str) -> str:
    """The canonical ``named_modules()`` name of ``name``, whose integer parts may be negative.

    ``"blocks.-1.mixer.out_proj"`` -> ``"blocks.3.mixer.out_proj"`` in a model with 4 blocks. Raises
    ConfigError naming the first part that does not exist.
    """
    module, parts = model, []
    for part in name.split("."):
        children = dict(module.named_children())
        if part.lstrip("-").isdigit() and part not in children and isinstance(module, nn.ModuleList | nn.Sequential):
            index = int(part)
            if not -len(module) <= index < len(module):
                raise ConfigError(
                    f"{name!r}: index {index} out of range for {'.'.join(parts) or 'the model'} ({len(module)} entries)"
                )
            part = str(index % len(module))
        if part not in children:
            where = ".".join(parts) or "the model"
            raise ConfigError(f"{name!r}: {where} has no submodule {part!r} (it has: {', '.join(children) or 'none'})")
        module = children[part]
        parts.append(part)
    return ".".join(parts)


# Names of a block's output projection: Mamba's and torch's ``out_proj``, Llama's (Hugging Face) ``o_proj``.
OUTPUT_PROJECTIONS = ("out_proj", "o_proj")


def default_layer(model: nn.Module) -> str:
    """The layer HPD takes by default: the last ``nn.Linear`` named like an output projection
    (``OUTPUT_PROJECTIONS``: the last block's output projection in the models of ``models/`` and in Hugging Face
    Llama models)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] in OUTPUT_PROJECTIONS]
    if not names:
        raise ConfigError(
            f"hpd='auto': the model has no nn.Linear named {' or '.join(f'*{n}' for n in OUTPUT_PROJECTIONS)}; "
            "name the layers, hpd=['...']"
        )
    return names[-1]


HPDSpec = str | Iterable[str] | Mapping[str, Mapping[str, Any]]
_OPTIONS = ("orientation", "rank", "weight_bits", "input_bits")


def apply(model: nn.Module, spec: HPDSpec) -> dict[str, dict[str, int | None]]:
    """Replace, in place, the layers of ``spec`` by their HPD; returns the digital factors to place.

    ``spec``: ``"auto"`` (``default_layer``), a list of layer names (negative block indices allowed), or a
    mapping name -> options ``{"orientation": ..., "rank": ..., "weight_bits": ..., "input_bits": ...}``
    (the bits make the digital factor an integer tile). Returns ``{factor name: {"weight_bits", "input_bits"}}``
    for ``crossbar.compile``'s digital placement.
    """
    if isinstance(spec, str):
        if spec != "auto":
            raise ConfigError(f"hpd: 'auto', a list of layer names or a mapping name -> options (got {spec!r})")
        spec = [default_layer(model)]
    entries = {n: dict(o) for n, o in spec.items()} if isinstance(spec, Mapping) else {n: {} for n in spec}
    digital: dict[str, dict[str, int | None]] = {}
    for name, options in entries.items():
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ConfigError(f"hpd[{name!r}]: unknown option {unknown[0]!r} ({', '.join(_OPTIONS)})")
        canonical = resolve_name(model, name)
        layer = model.get_submodule(canonical)
        if not isinstance(layer, nn.Linear):
            raise ConfigError(f"hpd: {canonical} is a {type(layer).__name__}; HPD decomposes nn.Linear layers")
        hpd = decompose(layer, options.get("orientation", "us_analog"), options.get("rank"))
        parent_name, _, child = canonical.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, hpd)
        bits = {key: options.get(key) for key in ("weight_bits", "input_bits") if key in options}
        digital[f"{canonical}.{hpd.digital_factor}"] = bits
    return digital
