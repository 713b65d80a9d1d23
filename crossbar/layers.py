"""The torch module that replaces a matrix product in a compiled model: ``TiledLinear``.

A ``TiledLinear`` holds one weight (a float parameter: the model's own when it is a float32 parameter, so that
tied weights stay tied) and the tiles programmed from it, analog or digital: one set of tiles per group of a
block-diagonal (grouped) weight. Forward goes through the tiles; backward is straight-through: the gradient of
the float operation (``reference``) at the same inputs and weights, so a compiled model can be fine-tuned with
the hardware in the loop. When the float weight changes (an optimiser step), the tiles are programmed again,
with the same seed, at the next forward. Layers that share a weight share one programming (``shared``).
Convolutions (``crossbar.conv.TiledConv``) are a ``TiledLinear`` whose inputs are the unfolded patches.

Inputs: CPU tensors of a floating dtype (``SUPPORTED_DTYPES``). The tiles compute in float32 (the DAC quantizes
far coarser than float32 resolves); the output is cast back to the input's dtype, as torch layers return the
dtype they are given. Any other dtype or device raises a TypeError / ValueError that says what is supported.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from crossbar.config import ChipConfig
from crossbar.tiles import AnalogTiles, DigitalTile

Tile = AnalogTiles | DigitalTile
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def group_seed(seed: int, group: int) -> int:
    """The seed of group ``group`` of a layer programmed with ``seed`` (group 0 keeps ``seed``)."""
    return seed if group == 0 else int(np.random.SeedSequence([seed, group]).generate_state(1)[0])


class _StraightThrough(torch.autograd.Function):
    """Forward: the layer on its tiles. Backward: the gradient of ``layer.reference`` (float) at the same point."""

    @staticmethod
    def forward(ctx, layer, x, weight, bias):  # noqa: ANN001, ANN205 (torch's signature)
        ctx.layer = layer
        ctx.save_for_backward(x, weight, bias)
        return layer.analog(x)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        needs = ctx.needs_input_grad[1:]
        with torch.enable_grad():
            saved = zip(ctx.saved_tensors, needs, strict=True)
            leaves = [None if t is None else t.detach().requires_grad_(n) for t, n in saved]
            wanted = [t for t in leaves if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(ctx.layer.reference(*leaves), wanted, grad_out) if wanted else ())
        return None, *(next(grads) if t is not None and t.requires_grad else None for t in leaves)


class _Programmed:
    """The tiles of one weight and the version of the weight they were programmed from (shared by tied layers)."""

    def __init__(self) -> None:
        self.tiles: list[Tile] = []
        self.version = -1


def as_parameter(tensor: torch.Tensor) -> nn.Parameter:
    """The tensor itself when it is a float32 parameter (ties survive), else a float32 parameter copy."""
    if isinstance(tensor, nn.Parameter) and tensor.dtype == torch.float32:
        return tensor
    return nn.Parameter(tensor.detach().to(torch.float32).clone())


class TiledLinear(nn.Module):
    """``y = x @ W.T + b`` on tiles; x (..., in_features) -> (..., out_features).

    ``weight``: (out, in) (or (in, out) with ``transposed``, GPT-2's layout), or any (out, ...) tensor whose
    rows flatten to the matrix (a convolution kernel). ``groups`` G: the weight is block diagonal, output
    group g (out / G rows) reads input group g only, and each group is its own matrix on its own tiles (seed
    ``group_seed(seed, g)``). ``placement`` is ``"analog"`` (crossbar tiles of ``chip``, programmed with
    ``seed``) or ``"digital"`` (a DigitalTile with ``digital_weight_bits`` / ``digital_input_bits``, None for
    exact float). ``shared``: a layer with the same weight whose programming this one reuses. ``tile_calls``
    counts the calls that went through the tiles (the tests' guard against fast paths that bypass them).
    ``bias_per_vector``: the bias is added to each tile output vector (a subclass that adds it after other
    digital work says False and counts it in ``digital_ops_beyond_tiles``).
    """

    bias_per_vector = True

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        chip: ChipConfig,
        seed: int,
        placement: str = "analog",
        digital_weight_bits: int | None = None,
        digital_input_bits: int | None = None,
        *,
        groups: int = 1,
        transposed: bool = False,
        shared: TiledLinear | None = None,
    ) -> None:
        super().__init__()
        if placement not in ("analog", "digital"):
            raise ValueError(f"placement must be 'analog' or 'digital' (got {placement!r})")
        if weight.dim() < 2 or (transposed and weight.dim() != 2):
            raise ValueError(f"{type(self).__name__}: weight must be a matrix, got shape {tuple(weight.shape)}")
        if not (isinstance(groups, int) and groups >= 1 and weight.shape[0] % groups == 0):
            raise ValueError(f"{type(self).__name__}: groups={groups!r} must divide the weight's first dimension")
        self.weight = as_parameter(weight)
        self.transposed, self.groups = transposed, groups
        out, per_group = self._matrix(self.weight).shape
        self.bias = None if bias is None else as_parameter(bias)
        if self.bias is not None and tuple(self.bias.shape) != (out,):
            raise ValueError(f"{type(self).__name__}: bias of shape {tuple(self.bias.shape)}, expected ({out},)")
        self.out_features, self.in_features = out, per_group * groups
        self.chip, self.seed, self.placement = chip, seed, placement
        self.digital_bits = (digital_weight_bits, digital_input_bits)
        self.tile_calls = 0
        self.origin = "Linear"  # the layer type it replaces, for reports (e.g. GPT-2's "Conv1D")
        if shared is not None:
            self._programmed = shared._programmed
        else:
            self._programmed = _Programmed()
            self.program()

    # ------------------------------------------------------------------------------------- the weight matrix
    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """The (out, in / groups) matrix of a weight of this layer's layout, groups one after the other."""
        return weight.t() if self.transposed else weight.reshape(weight.shape[0], -1)

    @property
    def tiles(self) -> list[Tile]:
        """The tiles of each group (one entry without groups)."""
        return self._programmed.tiles

    @property
    def tile(self) -> Tile:
        """The tiles of an ungrouped layer."""
        if self.groups != 1:
            raise AttributeError(f"{type(self).__name__} has {self.groups} groups: use .tiles[g]")
        return self._programmed.tiles[0]

    def program(self) -> None:
        """(Re)program the tiles from the current float weights: one chip instance of ``self.seed``."""
        matrix = self._matrix(self.weight.detach()).numpy()
        rows = self.out_features // self.groups
        previous = self._programmed.tiles
        tiles: list[Tile] = []
        for g in range(self.groups):
            block = matrix[g * rows : (g + 1) * rows]
            if self.placement == "analog":
                tile = AnalogTiles(block, self.chip, group_seed(self.seed, g))
                if previous and isinstance(previous[g], AnalogTiles) and previous[g].calibrated:
                    tile.keep_calibration(previous[g])  # reprogrammed after an optimiser step: same ranges
            else:
                tile = DigitalTile(block, *self.digital_bits)
            tiles.append(tile)
        self._programmed.tiles = tiles
        self._programmed.version = self.weight._version

    def _reprogram_if_changed(self) -> None:
        if self.weight._version != self._programmed.version:
            self.program()

    def __setstate__(self, state: dict) -> None:
        """Unpickled (``crossbar.load``): the tiles come programmed for the weights they were saved with, so the
        parameters' fresh version counters must not trigger a reprogramming."""
        super().__setstate__(state)
        self._programmed.version = self.weight._version

    # ---------------------------------------------------------------------------------------- the products
    def _check_input(self, x: torch.Tensor) -> None:
        """A clear error for an input the tiles cannot take: not a tensor, not on the CPU, not a float dtype."""
        layer = f"crossbar {type(self).__name__}(in={self.in_features}, out={self.out_features})"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{layer}: input must be a torch.Tensor, got {type(x).__name__}")
        for what, device in (("input", x.device), ("weights", self.weight.device)):
            if device.type != "cpu":
                raise ValueError(
                    f"{layer}: {what} on device {str(device)!r}; the simulated tiles compute on the CPU only "
                    "(keep the compiled model on the CPU and pass x.cpu())"
                )
        if x.dtype not in SUPPORTED_DTYPES:
            supported = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES)
            raise TypeError(
                f"{layer}: input dtype {str(x.dtype).removeprefix('torch.')} is not supported; supported: "
                f"{supported} (computed in float32, returned in the input's dtype)"
            )

    def _as_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (M, in) float32, contiguous, after checking its device, dtype and width."""
        if (
            x.dim() == 2
            and x.dtype == torch.float32
            and x.shape[1] == self.in_features
            and x.is_contiguous()
            and x.is_cpu
            and self.weight.is_cpu
        ):
            return x  # the common case, without a torch call
        self._check_input(x)
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__}: input has {x.shape[-1]} features in its last dimension, "
                f"the layer expects {self.in_features} (input shape {tuple(x.shape)})"
            )
        return x.reshape(-1, self.in_features).to(torch.float32).contiguous()

    def tile_inputs(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """The input vectors (n, in_features) float32 a forward on ``x`` puts through the tiles, in chunks."""
        yield self._as_matrix(x)

    def vectors(self, x: torch.Tensor) -> int:
        """How many input vectors (MVMs per group) a forward on ``x`` runs."""
        return x.numel() // self.in_features

    def group_inputs(self, x2d: torch.Tensor) -> list[torch.Tensor]:
        """Input vectors (n, in_features) -> each group's slice (n, in_features / groups)."""
        width = self.in_features // self.groups
        return [x2d[:, g * width : (g + 1) * width] for g in range(self.groups)]

    def matmul(self, x2d: torch.Tensor, add_bias: bool = True) -> torch.Tensor:
        """(n, in_features) float32 -> (n, out_features) on the tiles (no gradient), bias added (``add_bias``)."""
        self.__dict__["tile_calls"] += 1  # a plain attribute: nn.Module.__setattr__ costs microseconds a call
        tiles, bias = self.tiles, self.bias if add_bias else None
        if self.groups == 1:
            return tiles[0].matmul(x2d, bias)
        rows = self.out_features // self.groups
        out = torch.empty(x2d.shape[0], self.out_features)
        for g, xg in enumerate(self.group_inputs(x2d)):
            part = slice(g * rows, (g + 1) * rows)
            out[:, part] = tiles[g].matmul(xg.contiguous(), None if bias is None else bias[part])
        return out

    def analog(self, x: torch.Tensor) -> torch.Tensor:
        """The layer on its tiles for the (checked, float32) input of ``reference``; no gradient."""
        return self.matmul(x)

    def reference(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The float operation the tiles approximate (its gradient is the straight-through gradient)."""
        matrix = self._matrix(weight)
        if self.groups == 1:
            return nn.functional.linear(x, matrix, bias)
        g, rows = self.groups, self.out_features // self.groups
        y = torch.einsum("bgi,goi->bgo", x.reshape(x.shape[0], g, -1), matrix.reshape(g, rows, -1))
        y = y.reshape(x.shape[0], self.out_features)
        return y if bias is None else y + bias

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """``analog`` with the straight-through gradient when one is needed."""
        self._reprogram_if_changed()
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _StraightThrough.apply(self, x, self.weight, self.bias)
        return self.analog(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._run(self._as_matrix(x))  # (M, out) float32
        if x.dim() != 2:
            y = y.reshape(*x.shape[:-1], self.out_features)
        return y if x.dtype == torch.float32 else y.to(x.dtype)  # (torch calls cost microseconds at batch 1)

    # ----------------------------------------------------------------------------------------- calibration
    def calibrate(self, x: torch.Tensor) -> None:
        """Calibrated DAC/ADC ranges of every analog group from a sample input ``x`` (as ``forward`` takes)."""
        self._reprogram_if_changed()
        rows = calibration_rows(self.tile_inputs(x.detach()), self.vectors(x))
        for tile, xg in zip(self.tiles, self.group_inputs(rows), strict=True):
            if isinstance(tile, AnalogTiles):
                tile.calibrate(xg.contiguous())

    def digital_ops_beyond_tiles(self, x: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
        """Digital operation counts of a forward on ``x`` (giving ``output``) beyond the tiles' matrix products
        and the per-vector work ``crossbar.estimate`` counts with them (keys of the ``digital_ops`` protocol,
        docs/energy.md); nothing for a plain matrix product."""
        return {}

    def kind(self) -> str:
        """The operator, for reports: e.g. ``"Linear"``, ``"Conv2d 3x3/2"``."""
        return self.origin

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups > 1 else ""
        return f"in_features={self.in_features}, out_features={self.out_features}{groups}, placement={self.placement}"


CALIBRATION_ROWS = 65536


def calibration_rows(chunks: Iterator[torch.Tensor], total: int, limit: int = CALIBRATION_ROWS) -> torch.Tensor:
    """The input vectors of ``chunks`` (each (n, in), ``total`` rows in all), every k-th row of each chunk
    kept so that about ``limit`` remain (evenly spaced: no random draw; calibration percentiles need a sample,
    not every patch of a large image)."""
    step = max(1, -(-total // limit))
    return torch.cat([chunk[::step] for chunk in chunks])
