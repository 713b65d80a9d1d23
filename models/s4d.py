"""S4D: a diagonal state-space layer computed as a long convolution (Gu, Gupta, Goel and Re, NeurIPS 2022).

Per channel h of H, a continuous-time diagonal SSM with M complex modes (their conjugates implied):

    x'(t) = Lambda x(t) + B u(t),   y(t) = 2 Re(C x(t)) + D u(t)

discretised with step dt_h (ZOH: dA = exp(dt Lambda), dB = (dA - 1)/Lambda B; bilinear:
dA = (1 + dt Lambda/2)/(1 - dt Lambda/2), dB = dt B/(1 - dt Lambda/2)). Unrolled over L steps it is a
convolution y = K * u + D u with the kernel

    K[h, l] = 2 Re( sum_m C[h,m] dB[h,m] dA[h,m]^l )        (a Vandermonde product, l = 0..L-1)

computed by FFT (zero-padded to 2L, so the circular convolution is the causal one). Inits
(``models.hippo``): S4D-LegS, S4D-Lin, S4D-Inv, and S4-PTD (``init="ptd"``: the PTD-diagonalised
HiPPO-LegS, ``models.ptd``). Output: GELU, then ``nn.Linear(H, 2H)`` and a GLU, as in the reference s4d.py.

On the chip: the output ``nn.Linear`` goes on tiles; kernel generation, FFT convolution, D skip, GELU and GLU
stay digital and are counted by ``digital_ops``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from models.hippo import diagonal_init, hippo_legs
from models.ptd import ptd_modal

INITS = ("legs", "lin", "inv", "ptd")
DISCRETISATIONS = ("zoh", "bilinear")
BYTES = 4  # float32 activations and parameters


def ssm_init(init: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(Lambda (M,), B (M,), out)`` complex128 of a single-input diagonal SSM of state size ``n``.

    ``out`` (n, M) maps a real output row C (n,) to the modes (C @ out) for ``ptd``; None for the others,
    whose C is drawn directly in the modal basis.
    """
    if init == "ptd":
        lam, into, out = ptd_modal(n)
        return lam, into @ hippo_legs(n)[1], out
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)} (got {init!r})")
    return (*diagonal_init(init, n), None)


def log_uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """``count`` draws of log(x) with x log-uniform in [low, high]."""
    return math.log(low) + torch.rand(count, generator=generator, dtype=torch.float64) * math.log(high / low)


def fft_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution ``y[..., t] = sum_{s<=t} k[..., s] u[..., t-s]`` by FFT; u (B, H, L), k (H, L)."""
    length = u.shape[-1]
    spectrum = torch.fft.rfft(u, n=2 * length) * torch.fft.rfft(k, n=2 * length)
    return torch.fft.irfft(spectrum, n=2 * length)[..., :length]


def fft_conv_ops(batch: int, channels: int, length: int) -> dict[str, float]:
    """Real operations of ``fft_causal_conv`` on (batch, channels, length).

    A radix-2 complex FFT of size n costs (n/2) log2 n butterflies of one complex multiply (4 mul, 2 add) and
    two complex adds (4 add): 2 n log2 n mul + 3 n log2 n add. A real FFT of size n costs half of that.
    Here n = 2L: rfft of the input (batch x channels), of the kernel (channels), the irfft (batch x channels),
    and the product of the n/2 + 1 complex bins (4 mul + 2 add each).
    """
    n = 2 * length
    ffts = 2 * batch * channels + channels
    bins = batch * channels * (n // 2 + 1)
    return {"mul": ffts * n * math.log2(n) + 4 * bins, "add": ffts * 1.5 * n * math.log2(n) + 2 * bins}


class GatedOutput(nn.Module):
    """GELU, ``nn.Linear(H, 2H)`` (on tiles), GLU: (B, L, H) -> (B, L, H)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_model, 2 * d_model)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.glu(self.linear(nn.functional.gelu(y)), dim=-1)

    def digital_ops(self, inputs: tuple, output: torch.Tensor) -> dict[str, float]:
        """GELU on the input, sigmoid and product of the GLU on the output (B, L, H)."""
        n = output.numel()
        return {"nonlinear": 2.0 * n, "mul": float(n), "memory_bytes": BYTES * 4.0 * n}


class ConvSSM(nn.Module):
    """Shared body of S4D and DSS: y = GatedOutput(K * u + D u); subclasses define ``kernel(L)``.

    u, y (B, L, H). ``ssm(u)`` is the pre-activation convolution output, (B, L, H).
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.D = nn.Parameter(torch.randn(d_model))
        self.output = GatedOutput(d_model)

    def kernel(self, length: int) -> torch.Tensor:
        raise NotImplementedError

    def ssm(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"{type(self).__name__}: expects (batch, length, {self.d_model}), got {tuple(u.shape)}")
        x = u.transpose(1, 2)
        y = fft_causal_conv(x, self.kernel(x.shape[-1]).to(x.dtype)) + self.D.unsqueeze(-1) * x
        return y.transpose(1, 2)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.output(self.ssm(u))


class S4D(ConvSSM):
    """An S4D layer: H channels, each a diagonal SSM of state size ``d_state`` (M complex modes).

    Parameters: ``log_dt`` (H,), ``log_neg_real`` and ``imag`` (H, M) for Lambda = -exp(log_neg_real) + i imag,
    ``B`` and ``C`` (H, M, 2) complex as real pairs, ``D`` (H,).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        init: str = "legs",
        discretisation: str = "zoh",
        dt_range: tuple[float, float] = (1e-3, 1e-1),
        seed: int = 0,
    ) -> None:
        super().__init__(d_model)
        if discretisation not in DISCRETISATIONS:
            raise ValueError(f"discretisation must be one of {', '.join(DISCRETISATIONS)} (got {discretisation!r})")
        generator = torch.Generator().manual_seed(seed)
        lam, b, out = ssm_init(init, d_state)
        if np.any(lam.real >= 0):
            raise ValueError(f"init {init!r}: eigenvalues must have negative real parts")
        modes = len(lam)
        self.init, self.discretisation = init, discretisation
        lam_t = torch.from_numpy(np.tile(lam, (d_model, 1)))
        self.log_dt = nn.Parameter(log_uniform(d_model, *dt_range, generator).float())
        self.log_neg_real = nn.Parameter(torch.log(-lam_t.real).float())
        self.imag = nn.Parameter(lam_t.imag.float())
        self.B = nn.Parameter(torch.view_as_real(torch.from_numpy(np.tile(b, (d_model, 1)))).float())
        if out is None:
            c = torch.randn(d_model, modes, 2, generator=generator) * math.sqrt(0.5)
        else:
            real_c = torch.randn(d_model, d_state, generator=generator, dtype=torch.float64)
            c = torch.view_as_real(real_c.to(torch.complex128) @ torch.from_numpy(out))
        self.C = nn.Parameter(c.float())
        with torch.no_grad():
            self.D.copy_(torch.randn(d_model, generator=generator))

    def eigenvalues(self) -> torch.Tensor:
        return torch.complex(-torch.exp(self.log_neg_real), self.imag)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log dA, dB, C)``, each (H, M) complex: dA^l = exp(l log dA)."""
        lam = self.eigenvalues()
        dt_lam = torch.exp(self.log_dt).unsqueeze(-1) * lam
        b = torch.view_as_complex(self.B)
        if self.discretisation == "zoh":
            return dt_lam, b * torch.expm1(dt_lam) / lam, torch.view_as_complex(self.C)
        denominator = 1 - dt_lam / 2
        log_da = torch.log((1 + dt_lam / 2) / denominator)
        return log_da, b * torch.exp(self.log_dt).unsqueeze(-1) / denominator, torch.view_as_complex(self.C)

    def kernel(self, length: int) -> torch.Tensor:
        """K (H, L) real: the Vandermonde product 2 Re(sum_m C dB dA^l)."""
        log_da, db, c = self.discrete()
        steps = torch.arange(length, dtype=log_da.real.dtype)
        vandermonde = torch.exp(log_da.unsqueeze(-1) * steps)  # (H, M, L)
        return 2 * torch.einsum("hm,hml->hl", c * db, vandermonde).real

    def digital_ops(self, inputs: tuple, output: torch.Tensor) -> dict[str, float]:
        """Real operations of one forward of this layer's own code (the output Linear and GLU not included).

        Counted for ZOH (bilinear differs by a few operations per mode). Per mode (H M of them): dt Lambda
        (2 mul), exp (exp, cos, sin: 3 nonlinear), divide by Lambda (6 mul, 3 add), times B and times C (4 mul,
        2 add each). Per mode and step (H M L): l log dA (2 mul), the complex exp (3 nonlinear), the kernel
        term Re(w dA^l) accumulated (2 MAC). FFT convolution: ``fft_conv_ops``. D skip: B L H MACs.
        Memory: input and output activations, the kernel and the layer's own parameters, 4 bytes each.
        """
        batch, length, channels = inputs[0].shape
        hm = channels * self.C.shape[1]
        hml = hm * length
        ops = fft_conv_ops(batch, channels, length)
        ops["mac"] = 2.0 * hml + batch * length * channels
        ops["nonlinear"] = 3.0 * hm + 3.0 * hml
        ops["mul"] += 16.0 * hm + 2.0 * hml
        ops["add"] += 7.0 * hm
        parameters = sum(p.numel() for p in self.parameters(recurse=False))
        ops["memory_bytes"] = BYTES * (2.0 * batch * length * channels + channels * length + parameters)
        return ops
