"""Mamba-2: the state-space-duality (SSD) mixer of Dao and Gu (arXiv 2405.21060), float PyTorch.

One mixer maps x (batch, length, d_model) -> (batch, length, d_model):

    z, xBC, dt = in_proj(x)                      gate z (d_inner), xBC (d_inner + 2 G N), dt (one per head)
    x, B, C    = SiLU(causal depthwise conv1d(xBC))
    dt         = softplus(dt + dt_bias)          (batch, length, heads)
    y          = ssd(x * dt, dt * A, B, C) + D x  per head h: state H_t = exp(dt_t A_h) H_{t-1} + x_t B_t^T,
                                                  y_t = H_t C_t; A_h a negative scalar (A = a_h * identity)
    out        = out_proj(RMSNorm(y * SiLU(z)) * weight)

Because A is a scalar per head, the scan has a matrix form inside a chunk of T steps:
y = (L o C B^T) x with L[t, s] = exp(sum_{s < k <= t} dt_k A_h) for s <= t. ``ssd`` computes that
(matmuls), carries the states between chunks with a short loop over chunks, and adds their contribution.
On the chip in_proj and out_proj are analog; the conv, the scan, the norm and the gate are digital.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.mamba import FLOAT_BYTES, check_sequence, dt_bias_init


def segment_sums(a: torch.Tensor) -> torch.Tensor:
    """S[..., t, s] = sum_{s < k <= t} a[..., k] for s <= t, -inf above the diagonal; a (..., T) -> (..., T, T).

    Summed term by term (a masked cumulative sum), not as a difference of two prefix sums, so a short
    segment far into a strongly decaying chunk keeps its full precision.
    """
    T = a.shape[-1]
    ones = torch.ones(T, T, dtype=torch.bool, device=a.device)
    terms = a.unsqueeze(-1).expand(*a.shape, T).masked_fill(~torch.tril(ones, diagonal=-1), 0.0)
    return terms.cumsum(dim=-2).masked_fill(~torch.tril(ones), -math.inf)


def ssd(x: torch.Tensor, a: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """The SSD scan, zero initial state: H_t = exp(a_t) H_{t-1} + x_t B_t^T, y_t = H_t C_t, per head.

    x: (batch, length, heads, p); a: (batch, length, heads) log-decays (<= 0 for a stable scan);
    B, C: (batch, length, groups, n) with heads a multiple of groups (head h reads group h // (heads/groups)).
    Returns y (batch, length, heads, p).
    """
    batch, length, heads, p = x.shape
    if a.shape != (batch, length, heads) or B.dim() != 4 or C.shape != B.shape or B.shape[:2] != (batch, length):
        raise ValueError(
            "ssd: expects x (batch, length, heads, p), a (batch, length, heads), B and C (batch, length, groups, n),"
            f" got x {tuple(x.shape)}, a {tuple(a.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    if heads % B.shape[2] or chunk < 1:
        raise ValueError(f"ssd: heads ({heads}) must be a multiple of groups ({B.shape[2]}), chunk ({chunk}) >= 1")
    per_group = heads // B.shape[2]
    B, C = B.repeat_interleave(per_group, dim=2), C.repeat_interleave(per_group, dim=2)
    pad = -length % chunk  # zero steps at the end (no input, no decay) leave the real outputs unchanged
    x, a, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, a, B, C))
    n_chunks = (length + pad) // chunk
    # heads first, then chunks of T steps: x (b, h, c, T, p), B and C (b, h, c, T, n), a (b, h, c, T)
    x = x.reshape(batch, n_chunks, chunk, heads, p).permute(0, 3, 1, 2, 4)
    B = B.reshape(batch, n_chunks, chunk, heads, -1).permute(0, 3, 1, 2, 4)
    C = C.reshape(batch, n_chunks, chunk, heads, -1).permute(0, 3, 1, 2, 4)
    a = a.reshape(batch, n_chunks, chunk, heads).permute(0, 3, 1, 2)

    # within each chunk: y = (L o C B^T) x, L[t, s] = exp(a_{s+1} + ... + a_t) for s <= t
    segments = segment_sums(a)
    y = (torch.exp(segments) * (C @ B.transpose(-1, -2))) @ x
    # each chunk's own final state: sum_s exp(a_{s+1} + ... + a_T) x_s B_s^T, (b, h, c, p, n)
    to_end = torch.exp(segments[..., -1, :]).unsqueeze(-1)
    chunk_states = x.transpose(-1, -2) @ (B * to_end)
    # decay from the chunk's start to step t, exp(a_1 + ... + a_t); its last entry is the whole chunk's decay
    from_start = torch.exp(segments[..., :, 0] + a[..., :1])
    chunk_decay = from_start[..., -1]  # (b, h, c)
    # carry the states across chunks (a short loop), then read each chunk's incoming state with C
    incoming = [torch.zeros_like(chunk_states[:, :, 0])]
    for c in range(n_chunks - 1):
        incoming.append(incoming[-1] * chunk_decay[:, :, c, None, None] + chunk_states[:, :, c])
    incoming = torch.stack(incoming, dim=2)
    y = y + (C * from_start.unsqueeze(-1)) @ incoming.transpose(-1, -2)
    return y.permute(0, 2, 3, 1, 4).reshape(batch, n_chunks * chunk, heads, p)[:, :length]


class Mamba2(nn.Module):
    """The Mamba-2 mixer: x (batch, length, d_model) -> (batch, length, d_model).

    ``expand`` * d_model inner channels in heads of ``headdim``; ``d_state`` (N) states per head and channel;
    ``groups`` shared B/C groups; a causal depthwise convolution of width ``d_conv``; SSD chunks of ``chunk``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 32,
        expand: int = 2,
        headdim: int = 32,
        groups: int = 1,
        d_conv: int = 4,
        chunk: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        a_init_range: tuple[float, float] = (1.0, 16.0),
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        d_inner = expand * d_model
        if min(d_model, d_state, expand, headdim, groups, d_conv, chunk) < 1 or d_inner % headdim:
            raise ValueError(
                f"Mamba2: sizes must be positive and expand * d_model ({d_inner}) a multiple of headdim ({headdim})"
            )
        self.heads = d_inner // headdim
        if self.heads % groups:
            raise ValueError(f"Mamba2: heads ({self.heads}) must be a multiple of groups ({groups})")
        self.d_model, self.d_inner, self.d_state, self.headdim, self.groups = d_model, d_inner, d_state, headdim, groups
        self.chunk, self.eps = chunk, eps
        conv_channels = d_inner + 2 * groups * d_state
        self.in_proj = nn.Linear(d_model, d_inner + conv_channels + self.heads, bias=False)
        self.conv1d = nn.Conv1d(conv_channels, conv_channels, d_conv, groups=conv_channels, padding=d_conv - 1)
        self.dt_bias = nn.Parameter(dt_bias_init(self.heads, dt_min, dt_max))
        low, high = a_init_range
        self.A_log = nn.Parameter(torch.log(torch.empty(self.heads).uniform_(low, high)))
        self.D = nn.Parameter(torch.ones(self.heads))
        self.norm_weight = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        check_sequence(u, self.d_model, "Mamba2")
        batch, length, _ = u.shape
        gn = self.groups * self.d_state
        z, xBC, dt = self.in_proj(u).split([self.d_inner, self.d_inner + 2 * gn, self.heads], dim=-1)
        xBC = F.silu(self.conv1d(xBC.transpose(1, 2))[..., :length].transpose(1, 2))
        x, B, C = xBC.split([self.d_inner, gn, gn], dim=-1)
        dt = F.softplus(dt + self.dt_bias)  # (batch, length, heads)
        A = -torch.exp(self.A_log)
        x = x.reshape(batch, length, self.heads, self.headdim)
        B = B.reshape(batch, length, self.groups, self.d_state)
        C = C.reshape(batch, length, self.groups, self.d_state)
        y = ssd(x * dt.unsqueeze(-1), dt * A, B, C, self.chunk) + x * self.D.unsqueeze(-1)
        y = y.reshape(batch, length, self.d_inner) * F.silu(z)
        y = y * torch.rsqrt(y.square().mean(dim=-1, keepdim=True) + self.eps) * self.norm_weight
        return self.out_proj(y)

    def digital_ops(self, inputs: tuple, output: torch.Tensor) -> dict[str, float]:
        """Operations of one forward of this module's own code, counted as the recurrence they compute.

        Per token (P = d_inner channels, H heads, N = d_state): SiLU of the conv output (P + 2 G N) and of the
        gate (P), softplus and exp(dt A) per head (2 H nonlinear; dt A is 1 mul per head); x dt (P mul);
        the state update H_t = exp(a) H_{t-1} + x B^T (P N mul, P N mac) and the readout H_t C_t (P N mac);
        D x + y (P mac); the gate product (P mul); RMSNorm: sum of squares (P mac), 1/sqrt (1 nonlinear),
        two products (2 P mul). Once per forward: A = -exp(A_log) (H nonlinear). The chunked SSD computes the
        same recurrence with more arithmetic (its matrix form); this counts the recurrence, the minimum.
        memory_bytes: the state read and written at every step plus the mixer's own parameters, float32.
        """
        batch, length = inputs[0].shape[:2]
        tokens, p, h, n = batch * length, self.d_inner, self.heads, self.d_state
        gn = self.groups * n
        return {
            "mac": float(tokens * (2 * p * n + 2 * p)),
            "add": 0.0,
            "mul": float(tokens * (p * n + 4 * p + h)),
            "nonlinear": float(tokens * (2 * p + 2 * gn + 2 * h + 1) + h),
            "memory_bytes": float(FLOAT_BYTES * (2 * tokens * p * n + 3 * h + p)),
        }
