"""S5: one multi-input multi-output diagonal SSM per layer, run by a parallel scan (Smith, Warrington and
Linderman, "Simplified State Space Layers for Sequence Modeling", ICLR 2023).

H input/output channels share one state of M complex modes (conjugates implied):

    x_k = dA x_{k-1} + dB u_k,    y_k = 2 Re(C x_k) + D u_k

with Lambda (M,) per-mode steps dt (M,), ZOH: dA = exp(dt Lambda), dB = diag((dA - 1)/Lambda) B.
B (M, H) and C (H, M) are complex. Because Lambda is diagonal the recurrence is an associative scan over the
pairs (a, b) -> (a2 a1, a2 b1 + b2); ``diagonal_scan`` runs it in log2(L) vectorised steps (Hillis-Steele).

Inits: ``legs`` (S5: eigenvectors V of the normal part of HiPPO-LegS, B = V^H B0, C = C0 V with real
lecun-normal B0, C0) and ``ptd`` (S5-PTD: the PTD-diagonalised HiPPO-LegS, B = V^-1 B0, C = C0 V).
Output: GELU, ``nn.Linear(H, 2H)``, GLU (as S4D here, for comparable models).

On the chip, by default B and C stay digital (complex matrix products). ``bc_as_linear(model)`` rewrites every
S5 layer so that B is ``nn.Linear(H, 2M)`` producing [Re Bu; Im Bu] and C is ``nn.Linear(2M, H)`` with weight
[2 Re C, -2 Im C] acting on [Re x; Im x] (the real block form of the complex products with real u and y):
``crossbar.compile`` then maps them onto tiles. The function is exactly the same in float.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from models.hippo import legs_modal
from models.ptd import ptd_modal
from models.s4d import BYTES, GatedOutput, log_uniform

INITS = ("legs", "ptd")


def diagonal_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x_k = a * x_{k-1} + b_k (x_{-1} = 0) for constant a (M,) and b (B, L, M), complex; returns x (B, L, M).

    Hillis-Steele inclusive scan: after the step with offset d, x_k = sum_{j<2d} a^j b_{k-j}.
    """
    x, power, offset = b, a, 1
    length = b.shape[1]
    while offset < length:
        shifted = nn.functional.pad(torch.view_as_real(x[:, :-offset]), (0, 0, 0, 0, offset, 0))
        x = x + power * torch.view_as_complex(shifted)
        power, offset = power * power, 2 * offset
    return x


def scan_ops(batch: int, length: int, modes: int) -> dict[str, float]:
    """Real operations of ``diagonal_scan``: at offset d, (L - d) B M complex multiply-adds (4 mul, 4 add)."""
    shifted = sum(length - d for d in (2**i for i in range(math.ceil(math.log2(max(length, 1)))))) * batch * modes
    steps = math.ceil(math.log2(max(length, 1)))
    return {"mul": 4.0 * shifted + 4.0 * steps * modes, "add": 4.0 * shifted + 2.0 * steps * modes}


class S5(nn.Module):
    """An S5 layer: (B, L, H) -> (B, L, H), state of ``d_state`` (M complex modes).

    Parameters: ``log_dt`` (M,), ``log_neg_real``/``imag`` (M,), ``B`` (M, H, 2) and ``C`` (H, M, 2) complex as
    pairs (or, after ``bc_as_linear``, ``B_linear``/``C_linear``), ``D`` (H,).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        init: str = "legs",
        dt_range: tuple[float, float] = (1e-3, 1e-1),
        seed: int = 0,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)} (got {init!r})")
        generator = torch.Generator().manual_seed(seed)
        lam, into, out = ptd_modal(d_state) if init == "ptd" else legs_modal(d_state)
        if np.any(lam.real >= 0):
            raise ValueError(f"init {init!r}: eigenvalues must have negative real parts")
        b0 = torch.randn(d_state, d_model, generator=generator, dtype=torch.float64) / math.sqrt(d_model)
        c0 = torch.randn(d_model, d_state, generator=generator, dtype=torch.float64) / math.sqrt(d_state)
        self.d_model, self.init = d_model, init
        self.log_dt = nn.Parameter(log_uniform(len(lam), *dt_range, generator).float())
        self.log_neg_real = nn.Parameter(torch.from_numpy(np.log(-lam.real)).float())
        self.imag = nn.Parameter(torch.from_numpy(lam.imag.copy()).float())
        self.B = nn.Parameter(torch.view_as_real(torch.from_numpy(into) @ b0.to(torch.complex128)).float())
        self.C = nn.Parameter(torch.view_as_real(c0.to(torch.complex128) @ torch.from_numpy(out)).float())
        self.D = nn.Parameter(torch.randn(d_model, generator=generator))
        self.B_linear: nn.Linear | None = None
        self.C_linear: nn.Linear | None = None
        self.output = GatedOutput(d_model)

    @property
    def modes(self) -> int:
        return self.imag.shape[0]

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dA, dB / B)``, each (M,) complex: the ZOH transition and the per-mode input factor."""
        lam = torch.complex(-torch.exp(self.log_neg_real), self.imag)
        dt_lam = torch.exp(self.log_dt) * lam
        return torch.exp(dt_lam), torch.expm1(dt_lam) / lam

    def bc_on_linear(self) -> None:
        """Express B and C as real ``nn.Linear`` layers (real block form) so ``crossbar.compile`` maps them."""
        b, c = torch.view_as_complex(self.B.detach()), torch.view_as_complex(self.C.detach())
        self.B_linear = nn.Linear(self.d_model, 2 * self.modes, bias=False, dtype=self.B.dtype)
        self.C_linear = nn.Linear(2 * self.modes, self.d_model, bias=False, dtype=self.C.dtype)
        with torch.no_grad():
            self.B_linear.weight.copy_(torch.cat([b.real, b.imag], dim=0))
            self.C_linear.weight.copy_(torch.cat([2 * c.real, -2 * c.imag], dim=1))
        del self.B, self.C

    def ssm(self, u: torch.Tensor) -> torch.Tensor:
        """Pre-activation output 2 Re(C x_k) + D u_k, u (B, L, H) -> (B, L, H)."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"S5: expects (batch, length, {self.d_model}), got {tuple(u.shape)}")
        da, factor = self.discrete()
        if self.B_linear is None:
            bu = torch.einsum("blh,mh->blm", u.to(factor.dtype), torch.view_as_complex(self.B))
        else:
            re, im = self.B_linear(u).split(self.modes, dim=-1)
            bu = torch.complex(re, im).to(factor.dtype)
        x = diagonal_scan(da, bu * factor)
        if self.C_linear is None:
            y = 2 * torch.einsum("blm,hm->blh", x, torch.view_as_complex(self.C)).real
        else:
            y = self.C_linear(torch.cat([x.real, x.imag], dim=-1).to(u.dtype))
        return y + self.D * u

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.output(self.ssm(u))

    def digital_ops(self, inputs: tuple, output: torch.Tensor) -> dict[str, float]:
        """Real operations of one forward of this layer's own code (B_linear, C_linear, output not included).

        Discretisation per mode (M): dt Lambda (2 mul), two complex exps (6 nonlinear), divide (6 mul, 3 add).
        Input factor: B L M complex products (4 mul, 2 add). Scan: ``scan_ops``. D skip: B L H MACs. When B
        and C are complex parameters (not on linears): B L M H complex-by-real MACs (2 MAC) for Bu and
        B L H M real-part MACs (2 MAC) for C x.
        """
        batch, length, channels = inputs[0].shape
        blm = batch * length * self.modes
        ops = scan_ops(batch, length, self.modes)
        ops["mul"] += 8.0 * self.modes + 4.0 * blm
        ops["add"] += 3.0 * self.modes + 2.0 * blm
        ops["nonlinear"] = 6.0 * self.modes
        ops["mac"] = float(batch * length * channels)
        if self.B_linear is None:
            ops["mac"] += 4.0 * blm * channels
        parameters = sum(p.numel() for p in self.parameters(recurse=False))
        ops["memory_bytes"] = BYTES * (2.0 * batch * length * channels + 4.0 * blm + parameters)
        return ops


def bc_as_linear(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the B and C of every S5 layer as real ``nn.Linear`` layers (same function)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, S5) and module.B_linear is None:
            module.bc_on_linear()
    return model
