"""Convolutions on tiles: ``nn.Conv1d/2d/3d`` of any kernel, stride, padding, dilation and groups.

The unrolled (im2col) mapping: the kernel of group g, (out/G, in/G, k1, ..., kn), is the matrix
(out/G) x (in/G * k1 * ... * kn) on its own tiles, and each output position is one MVM of the unfolded patch
(in/G * k1 * ... * kn values, channel-major as the kernel flattens). Each group is its own matrix, not a
block-diagonal placement of all groups on one grid: a block diagonal would allocate G times the cells, add the
read noise and conductance of G-1 zero blocks to every column, and give one group's inputs the DAC scale of
another's; separate matrices keep each group's ranges its own and compute no zeros. Depthwise convolutions
(groups = in_channels) stay digital by design: each output reads k values of one channel, not a matrix product.

Patches are strided views of the (padded) input, copied chunk by chunk (``CHUNK_BYTES`` of patch values at a
time, whole samples or output lines) and sent through the same engine as a Linear: no Python loop over
positions, and memory bounded for large images. Padding modes (zeros, reflect, replicate, circular) and
``padding="same"`` pad with ``torch.nn.functional.pad`` exactly as torch's convolutions do.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (torch's convention)

from crossbar.layers import TiledLinear, as_parameter

CHUNK_BYTES = 4 * 2**20  # patch values (float32) unfolded at a time
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FUNCTIONAL = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_FUNCTIONAL_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel, stride, dilation and padding of an n-d convolution; ``pad``: (before, after) per spatial dim."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pad: tuple[tuple[int, int], ...]
    padding_mode: str

    @classmethod
    def of(cls, conv: nn.Module) -> ConvGeometry:
        kernel, dilation = tuple(conv.kernel_size), tuple(conv.dilation)
        if conv.padding == "same":  # torch's split: the odd element of the total goes after
            totals = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
            pad = tuple((t // 2, t - t // 2) for t in totals)
        elif conv.padding == "valid":
            pad = tuple((0, 0) for _ in kernel)
        else:
            pad = tuple((p, p) for p in conv.padding)
        return cls(kernel, tuple(conv.stride), dilation, pad, conv.padding_mode)

    @property
    def dims(self) -> int:
        return len(self.kernel)

    def output_size(self, padded: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(
            (n - d * (k - 1) - 1) // s + 1
            for n, k, s, d in zip(padded, self.kernel, self.stride, self.dilation, strict=True)
        )

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        if not any(a or b for a, b in self.pad):
            return x
        flat = [p for pair in reversed(self.pad) for p in pair]  # F.pad lists the last dimension first
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, flat, mode=mode)

    def describe(self) -> str:
        text = "x".join(map(str, self.kernel))
        if any(s != 1 for s in self.stride):
            text += "/" + "x".join(map(str, self.stride))
        if any(d != 1 for d in self.dilation):
            text += " d" + "x".join(map(str, self.dilation))
        return text


def patch_view(x: torch.Tensor, geometry: ConvGeometry, groups: int = 1) -> torch.Tensor:
    """A padded channels-last input (B, *spatial, C) -> a view (B, *out_spatial, G, *kernel, C/G) of every patch
    (no copy): each group's patch in (kernel position, channel) order, channels innermost, so that copying the
    patches reads runs of contiguous channels."""
    view, n = x, geometry.dims
    for d in range(n):
        extent = geometry.dilation[d] * (geometry.kernel[d] - 1) + 1
        view = view.unfold(1 + d, extent, geometry.stride[d])[..., :: geometry.dilation[d]]
    view = view.unflatten(1 + n, (groups, -1))  # (B, *out, G, C/G, *kernel)
    return view.permute(0, *range(1, n + 2), *range(n + 3, 2 * n + 3), n + 2)


class TiledConv(TiledLinear):
    """An n-d convolution on tiles: x (B, C_in, *spatial) or unbatched (C_in, *spatial) -> (B, C_out, *out).

    The weight parameter keeps torch's layout (out, in/G, *kernel); ``geometry``: stride, padding, dilation.
    On the tiles, a group's matrix row is its kernel in (kernel position, channel) order, as ``patch_view``
    orders the patches.
    """

    def __init__(self, *args: object, geometry: ConvGeometry, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.geometry = geometry
        self.in_channels = self.weight.shape[1] * self.groups

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.movedim(1, -1).reshape(weight.shape[0], -1)

    def kind(self) -> str:
        return f"Conv{self.geometry.dims}d {self.geometry.describe()}"

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """Checked, batched, float32 and padded input."""
        padded = self.geometry.pad_input(_batched_float32(self, x))
        if min(self.geometry.output_size(tuple(padded.shape[2:]))) < 1:
            raise ValueError(
                f"{type(self).__name__}: input of spatial size {tuple(x.shape[-self.geometry.dims :])} is smaller "
                "than the kernel "
                f"{self.geometry.kernel} (dilation {self.geometry.dilation}, after padding)"
            )
        return padded

    def _chunks(self, padded: torch.Tensor) -> Iterator[tuple[slice, slice, torch.Tensor]]:
        """(samples, first output dim, patches (n, in_features)) of at most about CHUNK_BYTES each."""
        channels_last = padded.movedim(1, -1).contiguous()  # one copy of the input, then runs of channels
        view = patch_view(channels_last, self.geometry, self.groups)
        batch, first, rest = view.shape[0], view.shape[1], math.prod(view.shape[2 : 1 + self.geometry.dims])
        budget = max(1, CHUNK_BYTES // (4 * self.in_features))  # patches per chunk
        if first * rest <= budget:  # whole samples
            step = budget // (first * rest)
            pieces = [(slice(b, min(b + step, batch)), slice(0, first)) for b in range(0, batch, step)]
        else:  # lines of the first output dimension, one sample at a time
            step = max(1, budget // rest)
            starts = [(b, i) for b in range(batch) for i in range(0, first, step)]
            pieces = [(slice(b, b + 1), slice(i, min(i + step, first))) for b, i in starts]
        for samples, lines in pieces:
            yield samples, lines, view[samples, lines].reshape(-1, self.in_features)

    def tile_inputs(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        for _, _, patches in self._chunks(self._padded(x)):
            yield patches

    def vectors(self, x: torch.Tensor) -> int:
        padded = self._padded(x)
        return padded.shape[0] * math.prod(self.geometry.output_size(tuple(padded.shape[2:])))

    def analog(self, padded: torch.Tensor) -> torch.Tensor:
        out_size = self.geometry.output_size(tuple(padded.shape[2:]))
        y = torch.empty(padded.shape[0], self.out_features, *out_size)
        for samples, lines, patches in self._chunks(padded):
            result = self.matmul(patches)  # (n, out)
            shape = (y[samples].shape[0], lines.stop - lines.start, *out_size[1:], self.out_features)
            y[samples, :, lines] = result.view(shape).movedim(-1, 1)
        return y

    def reference(self, padded: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        g = self.geometry
        return _FUNCTIONAL[g.dims](padded, weight, bias, g.stride, 0, g.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        y = self._run(self._padded(x)).to(x.dtype)  # computed in float32, returned in x's dtype (crossbar.layers)
        return y if x.dim() == self.geometry.dims + 2 else y.squeeze(0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel={self.geometry.describe()}"


class TiledConv1d(TiledConv):
    """``nn.Conv1d`` on tiles."""


class TiledConv2d(TiledConv):
    """``nn.Conv2d`` on tiles."""


class TiledConv3d(TiledConv):
    """``nn.Conv3d`` on tiles."""


_TILED = {nn.Conv1d: TiledConv1d, nn.Conv2d: TiledConv2d, nn.Conv3d: TiledConv3d}


class TiledConvTranspose(TiledLinear):
    """An n-d transposed convolution on tiles: x (B, C_in, *spatial) or unbatched -> (B, C_out, *out).

    The scatter form: each input position is one MVM of group g's matrix (C_out/G * prod(kernel)) x (C_in/G)
    (row (c, k) = weight[:, c, k] of the group's input channels), whose outputs are the position's
    contributions to C_out/G channels at prod(kernel) output offsets; a digital overlap-add places them
    (one strided add per kernel offset, not a loop over positions), crops ``padding``, and adds the bias.
    ``output_padding`` extends the output as in torch. Memory: about CHUNK_BYTES of contributions per chunk
    of whole samples (at least one sample).
    """

    bias_per_vector = False  # added once per output element, after the overlap-add

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, *args: object, geometry: ConvGeometry, **kwargs: object
    ) -> None:
        output_padding = kwargs.pop("output_padding")
        super().__init__(weight, None, *args, **kwargs)  # the bias is added after the overlap-add
        self.bias = None if bias is None else as_parameter(bias)
        self.geometry, self.output_padding = geometry, tuple(output_padding)
        self.in_channels, self.out_channels = weight.shape[0], weight.shape[1] * self.groups
        if self.bias is not None and tuple(self.bias.shape) != (self.out_channels,):
            raise ValueError(f"{type(self).__name__}: bias of shape {tuple(self.bias.shape)}")

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        g = self.groups
        per_group = weight.shape[0] // g
        return weight.reshape(g, per_group, -1).transpose(1, 2).reshape(-1, per_group)

    def kind(self) -> str:
        return f"ConvTranspose{self.geometry.dims}d {self.geometry.describe()}"

    def _chunks(self, x: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
        positions = math.prod(x.shape[2:])
        step = max(1, CHUNK_BYTES // (4 * positions * self.out_features))
        for b in range(0, x.shape[0], step):
            samples = slice(b, min(b + step, x.shape[0]))
            yield samples, x[samples].movedim(1, -1).reshape(-1, self.in_channels)

    def tile_inputs(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        for _, rows in self._chunks(_batched_float32(self, x)):
            yield rows

    def vectors(self, x: torch.Tensor) -> int:
        return math.prod(_batched_float32(self, x).shape) // self.in_channels

    def analog(self, x: torch.Tensor) -> torch.Tensor:
        g, n, size = self.geometry, self.geometry.dims, x.shape[2:]
        pad = [before for before, _ in g.pad]
        reach = [d * (k - 1) + 1 for d, k in zip(g.dilation, g.kernel, strict=True)]  # a kernel's extent
        spans = [(length - 1) * s for length, s in zip(size, g.stride, strict=True)]
        out = [
            span + r - 2 * p + extra for span, r, p, extra in zip(spans, reach, pad, self.output_padding, strict=True)
        ]
        full = [max(span + r, p + o) for span, r, p, o in zip(spans, reach, pad, out, strict=True)]
        y = torch.zeros(x.shape[0], self.out_channels, *full)
        everything = (slice(None), slice(None))
        for samples, rows in self._chunks(x):
            v = self.matmul(rows, add_bias=False)  # (positions, G * C_out/G * prod(kernel)), group-major
            v = v.view(-1, *size, self.out_channels, *g.kernel)  # -> (samples, C_out, *kernel, *size)
            v = v.permute(0, n + 1, *range(n + 2, 2 * n + 2), *range(1, n + 1))
            target = y[samples]
            for offset in np.ndindex(*g.kernel):  # overlap-add: one strided add per kernel offset
                starts = [o * d for o, d in zip(offset, g.dilation, strict=True)]
                where = [slice(a, a + span + 1, s) for a, span, s in zip(starts, spans, g.stride, strict=True)]
                target[(*everything, *where)] += v[(*everything, *offset)]
        y = y[(*everything, *(slice(p, p + o) for p, o in zip(pad, out, strict=True)))]
        return y if self.bias is None else y + self.bias.detach().view(-1, *([1] * n))

    def digital_ops_beyond_tiles(self, x: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
        """The overlap-add: every MVM output (one per input position and output (channel, kernel offset)) is
        added into the output once; then the bias, once per output element. (The buffer traffic of those
        outputs is counted with the tiles' outputs.)"""
        contributions = self.vectors(x) * self.out_features
        bias_adds = output.numel() if self.bias is not None else 0
        return {"add": float(contributions + bias_adds)}

    def reference(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        g = self.geometry
        pad = tuple(p[0] for p in g.pad)
        return _FUNCTIONAL_T[g.dims](x, weight, bias, g.stride, pad, self.output_padding, self.groups, g.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        # computed in float32, returned in x's dtype (crossbar.layers)
        y = self._run(_batched_float32(self, x)).to(x.dtype)
        return y if x.dim() == self.geometry.dims + 2 else y.squeeze(0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel={self.geometry.describe()}, transposed convolution"


def is_depthwise(module: nn.Module) -> bool:
    """A depthwise convolution (one filter per channel, as in Mamba): per-channel digital work, not a matrix
    product, so it stays digital by design and without a warning."""
    return isinstance(module, _CONVS) and module.in_channels == module.groups > 1


def conv_class(module: nn.Module) -> type[TiledConv]:
    """The tiled class of a convolution (its nearest torch base class)."""
    return next(_TILED[cls] for cls in type(module).__mro__ if cls in _TILED)


def _batched_float32(layer: TiledLinear, x: torch.Tensor) -> torch.Tensor:
    """A convolution's input x (batch, channels, *spatial) or unbatched (channels, *spatial), checked against
    ``layer`` (its ``geometry.dims`` and ``in_channels``), as float32 with a batch axis."""
    n = layer.geometry.dims
    if x.dim() not in (n + 1, n + 2) or x.shape[-n - 1] != layer.in_channels:
        raise ValueError(
            f"{type(layer).__name__}: expects input (batch, {layer.in_channels} channels, {n} spatial dims) "
            f"or unbatched, got shape {tuple(x.shape)}"
        )
    x = x.to(torch.float32)
    return x if x.dim() == n + 2 else x.unsqueeze(0)
