"""DSS: diagonal state spaces with the softmax-normalised kernel (Gupta, Gu and Berant, NeurIPS 2022).

Per channel h, M complex modes Lambda_m (conjugates implied) with per-channel step dt_h. DSS-softmax writes
the length-L kernel as

    K[h, l] = 2 Re( sum_m W[h,m] (exp(Lambda_m dt_h) - 1) / Lambda_m * softmax_l(l Lambda_m dt_h) )

where softmax_l is the complex softmax over l = 0..L-1 (exp(l z) / sum_r exp(r z), shifted by the largest
real part for stability). It is the kernel of the recurrence x_l = exp(Lambda dt) x_{l-1} + b u_l,
y = 2 Re(W x) with b = (exp(Lambda dt) - 1) / (Lambda Z), Z = sum_r exp(r Lambda dt): the normalisation keeps
the kernel bounded for any Lambda, so Re Lambda is left unconstrained. Init: the eigenvalues of the normal part
of HiPPO-LegS (the paper's "skew-HiPPO"), W complex normal. The convolution, D skip and gated output are
S4D's (``models.s4d.ConvSSM``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from models.hippo import diagonal_init
from models.s4d import BYTES, ConvSSM, fft_conv_ops, log_uniform


class DSS(ConvSSM):
    """A DSS-softmax layer: ``log_dt`` (H,), ``Lambda`` (M, 2) complex as pairs, ``W`` (H, M, 2), ``D`` (H,)."""

    def __init__(
        self, d_model: int, d_state: int = 64, dt_range: tuple[float, float] = (1e-3, 1e-1), seed: int = 0
    ) -> None:
        super().__init__(d_model)
        generator = torch.Generator().manual_seed(seed)
        lam, _ = diagonal_init("legs", d_state)
        self.log_dt = nn.Parameter(log_uniform(d_model, *dt_range, generator).float())
        self.Lambda = nn.Parameter(torch.view_as_real(torch.from_numpy(np.ascontiguousarray(lam))).float())
        self.W = nn.Parameter(torch.randn(d_model, len(lam), 2, generator=generator) * math.sqrt(0.5))
        with torch.no_grad():
            self.D.copy_(torch.randn(d_model, generator=generator))

    def kernel(self, length: int) -> torch.Tensor:
        """K (H, L) real."""
        lam = torch.view_as_complex(self.Lambda)
        dt_lam = torch.exp(self.log_dt).unsqueeze(-1) * lam  # (H, M)
        steps = torch.arange(length, dtype=dt_lam.real.dtype)
        exponent = dt_lam.unsqueeze(-1) * steps  # (H, M, L)
        shift = exponent.real.amax(dim=-1, keepdim=True)
        weights = torch.exp(exponent - shift)
        softmax = weights / weights.sum(dim=-1, keepdim=True)
        w = torch.view_as_complex(self.W) * torch.expm1(dt_lam) / lam
        return 2 * torch.einsum("hm,hml->hl", w, softmax).real

    def digital_ops(self, inputs: tuple, output: torch.Tensor) -> dict[str, float]:
        """Real operations of one forward of this layer's own code (output Linear and GLU not included).

        Per mode (H M): dt Lambda (2 mul), exp (3 nonlinear), divide by Lambda (6 mul, 3 add), times W (4 mul,
        2 add). Per mode and step (H M L): l dt Lambda (2 mul), shift (1 add), complex exp (3 nonlinear), the
        softmax sum (2 add), the complex divide (6 mul, 3 add), the kernel term Re(w s) accumulated (2 MAC).
        FFT convolution: ``fft_conv_ops``; D skip B L H MACs. Memory as S4D's.
        """
        batch, length, channels = inputs[0].shape
        hm = channels * self.W.shape[1]
        hml = hm * length
        ops = fft_conv_ops(batch, channels, length)
        ops["mac"] = 2.0 * hml + batch * length * channels
        ops["nonlinear"] = 3.0 * hm + 3.0 * hml
        ops["mul"] += 12.0 * hm + 8.0 * hml
        ops["add"] += 5.0 * hm + 6.0 * hml
        parameters = sum(p.numel() for p in self.parameters(recurse=False))
        ops["memory_bytes"] = BYTES * (2.0 * batch * length * channels + channels * length + parameters)
        return ops
