"""torch modules that replace nn.Linear and 1x1 nn.Conv1d in a compiled model.

Each keeps a float copy of the weight and bias as parameters and a tile (analog or digital) that computes
with them. Forward goes through the tile; backward is straight-through to the float weights (the gradient
of ``x @ W.T + b``), so a compiled model can be fine-tuned with the hardware in the loop. When the float
weights change (an optimiser step), the tiles are programmed again, with the same seed, at the next forward.
"""

from __future__ import annotations

import torch
from torch import nn

from crossbar.config import ChipConfig
from crossbar.tiles import AnalogTiles, DigitalTile


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, tile):  # noqa: ANN001, ANN205 (torch's signature)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return tile.matmul(x, bias)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        x, weight = ctx.saved_tensors
        grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
        grad_w = grad_out.t() @ x if ctx.needs_input_grad[1] else None
        grad_b = grad_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


class TiledLinear(nn.Module):
    """``y = x @ W.T + b`` on tiles; x (..., in_features) -> (..., out_features).

    ``placement`` is ``"analog"`` (crossbar tiles of ``chip``, programmed with ``seed``) or ``"digital"``
    (a DigitalTile with ``digital_weight_bits`` / ``digital_input_bits``, None for exact float).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        chip: ChipConfig,
        seed: int,
        placement: str = "analog",
        digital_weight_bits: int | None = None,
        digital_input_bits: int | None = None,
    ) -> None:
        super().__init__()
        if placement not in ("analog", "digital"):
            raise ValueError(f"placement must be 'analog' or 'digital' (got {placement!r})")
        self.weight = nn.Parameter(weight.detach().to(torch.float32).clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(torch.float32).clone())
        self.out_features, self.in_features = self.weight.shape
        self.chip, self.seed, self.placement = chip, seed, placement
        self.digital_bits = (digital_weight_bits, digital_input_bits)
        self.program()

    def program(self) -> None:
        """(Re)program the tiles from the current float weights: one chip instance of ``self.seed``."""
        weight = self.weight.detach().numpy()
        if self.placement == "analog":
            previous = getattr(self, "tile", None)
            self.tile: AnalogTiles | DigitalTile = AnalogTiles(weight, self.chip, self.seed)
            if isinstance(previous, AnalogTiles) and previous.calibrated:
                self.tile.keep_calibration(previous)  # reprogrammed after an optimiser step: same ranges
        else:
            self.tile = DigitalTile(weight, *self.digital_bits)
        self._programmed_version = self.weight._version

    def __setstate__(self, state: dict) -> None:
        """Unpickled (``crossbar.load``): the tiles come programmed for the weights they were saved with, so the
        parameters' fresh version counters must not trigger a reprogramming."""
        super().__setstate__(state)
        self._programmed_version = self.weight._version

    def calibrate(self, x: torch.Tensor) -> None:
        if isinstance(self.tile, AnalogTiles):
            self.tile.calibrate(self._as_matrix(x).detach())

    def _as_matrix(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__}: input has {x.shape[-1]} features in its last dimension, "
                f"the layer expects {self.in_features} (input shape {tuple(x.shape)})"
            )
        return x.reshape(-1, self.in_features).to(torch.float32).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight._version != self._programmed_version:
            self.program()
        leading = x.shape[:-1]
        x2d = self._as_matrix(x)
        if torch.is_grad_enabled() and (x2d.requires_grad or self.weight.requires_grad):
            y = _StraightThrough.apply(x2d, self.weight, self.bias, self.tile)
        else:
            y = self.tile.matmul(x2d, self.bias)
        return y.reshape(*leading, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, placement={self.placement}"


class TiledConv1d(TiledLinear):
    """A kernel-size-1 Conv1d on tiles: x (B, in_channels, L) -> (B, out_channels, L)."""

    @staticmethod
    def _channels_last(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"TiledConv1d: expects input (batch, channels, length), got shape {tuple(x.shape)}")
        return x.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self._channels_last(x)).transpose(1, 2)

    def calibrate(self, x: torch.Tensor) -> None:
        super().calibrate(self._channels_last(x))
