"""Mamba: the selective state-space (S6) mixer of Gu and Dao (arXiv 2312.00752), float PyTorch, CPU-fast.

One mixer maps x (batch, length, d_model) -> (batch, length, d_model), read top to bottom:

    x, z   = in_proj(x)                                  two streams of d_inner = expand * d_model channels
    x      = SiLU(causal depthwise conv1d(x))            kernel d_conv, one filter per channel
    dt,B,C = x_proj(x)                                   dt_rank + d_state + d_state per step (input-dependent)
    dt     = softplus(dt_proj(dt))                       (batch, length, d_inner) step sizes
    y      = selective_scan(x, dt, A, B, C) + D * x      h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t,  y_t = C_t h_t
    out    = out_proj(y * SiLU(z))

On the chip the four nn.Linear layers (in_proj, x_proj, dt_proj, out_proj) go on analog tiles; the depthwise
convolution, the scan, the gate and the nonlinearities are digital (``Mamba.digital_ops`` counts the mixer's
own share; the convolution is an nn.Conv1d submodule and is counted as such).

The scan (``models/selective_scan.py``) is a fused numba kernel with an analytic (adjoint) backward;
``benchmarks/bench_scan.py`` measures it against an indexed autograd loop over time, the same loop with the
adjoint backward in torch, chunked cumulative-sum and log-space scans and a parallel scan (docs/mamba.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.selective_scan import selective_scan

FLOAT_BYTES = 4  # float32 operands in the digital units (memory_bytes of digital_ops)


def check_sequence(x: torch.Tensor, d_model: int, name: str) -> None:
    """A clear error unless x is a float (batch, length, d_model) tensor."""
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{name}: expects input (batch, length, {d_model}), got shape {tuple(x.shape)}")


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y, for y > 0."""
    return y + torch.log(-torch.expm1(-y))


def dt_bias_init(size: int, dt_min: float, dt_max: float, floor: float = 1e-4) -> torch.Tensor:
    """Biases whose softplus is log-uniform in [dt_min, dt_max] (Mamba's step-size initialisation)."""
    dt = torch.exp(torch.rand(size) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp_min(floor)
    return inverse_softplus(dt)


class Mamba(nn.Module):
    """The Mamba mixer: x (batch, length, d_model) -> (batch, length, d_model).

    ``d_state`` (N) states per channel, ``expand`` * d_model inner channels, causal depthwise convolution of
    width ``d_conv``, step-size projection of rank ``dt_rank`` (default ceil(d_model / 16)).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ) -> None:
        super().__init__()
        if min(d_model, d_state, expand, d_conv) < 1 or not 0 < dt_min <= dt_max:
            raise ValueError(
                f"Mamba: sizes must be positive and 0 < dt_min <= dt_max (got d_model={d_model}, "
                f"d_state={d_state}, expand={expand}, d_conv={d_conv}, dt_min={dt_min}, dt_max={dt_max})"
            )
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner)
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt_bias_init(self.d_inner, dt_min, dt_max))
        # S4D-Real initialisation A[d, n] = -(n + 1), stored as log(-A) so that A stays negative.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sequence(x, self.d_model, "Mamba")
        length = x.shape[1]
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log)
        y = selective_scan(x, dt, A, B, C) + x * self.D
        return self.out_proj(y * F.silu(z))

    def digital_ops(self, inputs: tuple, output: torch.Tensor) -> dict[str, float]:
        """Operations of one forward of this module's own code (projections and conv are submodules).

        Per token and inner channel d (N = d_state): SiLU after the conv, softplus of dt, SiLU of the gate
        (3 nonlinear); per state: exp(dt A) (1 mul, 1 nonlinear), the drive (dt x) B (1 mul, plus 1 mul per
        channel for dt x), the update a h + u (1 mul, 1 add), the readout C h (1 mac); D x + y (1 mac) and the
        gate product (1 mul). Once per forward: A = -exp(A_log) (N d nonlinear). memory_bytes: the state read
        and written at every step plus the mixer's own parameters (A_log, D), float32.
        """
        batch, length = inputs[0].shape[:2]
        tokens, d, n = batch * length, self.d_inner, self.d_state
        return {
            "mac": float(tokens * d * (n + 1)),
            "add": float(tokens * d * n),
            "mul": float(tokens * d * (3 * n + 2)),
            "nonlinear": float(tokens * d * (n + 3) + d * n),
            "memory_bytes": float(FLOAT_BYTES * (2 * tokens * d * n + d * n + d)),
        }
