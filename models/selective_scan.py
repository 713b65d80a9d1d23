"""The S6 selective scan of Mamba, forward and backward, as fused numba kernels (CPU).

    h_t = exp(dt_t A) * h_{t-1} + (dt_t x_t) B_t          h: (d, n) per sequence, h_{-1} = 0
    y_t = h_t C_t

x, dt: (batch, length, d); A: (d, n); B, C: (batch, length, n); y: (batch, length, d).

Why kernels: an indexed Python loop over time under autograd records ~5 small tensor ops per step and its
backward walks that graph (slow); vectorised forms (chunked cumulative sums, log-space, parallel scans)
materialise several (batch, length, d, n) tensors and pass over them ~15 times. Here one kernel walks the
sequence once per (sequence, channel) with the state in a register-sized buffer, and the backward kernel
re-runs the forward for one channel (its states fit in cache), then the adjoint recurrence
dh_t = C_t dy_t + exp(dt_{t+1} A) dh_{t+1} backwards, accumulating every gradient on the way; nothing of size
(batch, length, d, n) is stored. Sequences run in parallel (numba prange). Measured in benchmarks/bench_scan.py.
"""

from __future__ import annotations

import numba
import numpy as np
import torch


@numba.njit(parallel=True, cache=True, fastmath=False)
def _forward(x, dt, A, B, C):  # noqa: ANN001, ANN202 (numba kernel on numpy arrays)
    batch, length, d = x.shape
    n = A.shape[1]
    y = np.zeros_like(x)
    for b in numba.prange(batch):
        h = np.zeros(n, dtype=x.dtype)
        for c in range(d):
            h[:] = 0.0
            for t in range(length):
                step, drive = dt[b, t, c], dt[b, t, c] * x[b, t, c]
                acc = 0.0
                for k in range(n):
                    h[k] = np.exp(step * A[c, k]) * h[k] + drive * B[b, t, k]
                    acc += h[k] * C[b, t, k]
                y[b, t, c] = acc
    return y


@numba.njit(parallel=True, cache=True, fastmath=False)
def _backward(x, dt, A, B, C, dy):  # noqa: ANN001, ANN202
    batch, length, d = x.shape
    n = A.shape[1]
    dx, ddt = np.zeros_like(x), np.zeros_like(dt)
    dB, dC = np.zeros_like(B), np.zeros_like(C)
    dA_per_sequence = np.zeros((batch, d, n), dtype=A.dtype)
    for b in numba.prange(batch):
        states = np.zeros((length + 1, n), dtype=x.dtype)  # states[t + 1] = h_t, states[0] = h_{-1} = 0
        dh = np.zeros(n, dtype=x.dtype)
        for c in range(d):
            for t in range(length):
                step, drive = dt[b, t, c], dt[b, t, c] * x[b, t, c]
                for k in range(n):
                    states[t + 1, k] = np.exp(step * A[c, k]) * states[t, k] + drive * B[b, t, k]
            dh[:] = 0.0
            for t in range(length - 1, -1, -1):
                step, g = dt[b, t, c], dy[b, t, c]
                drive = step * x[b, t, c]
                d_drive, d_step = 0.0, 0.0
                for k in range(n):
                    decay = np.exp(step * A[c, k])
                    dh[k] += g * C[b, t, k]  # dh now holds dL/dh_t
                    dC[b, t, k] += g * states[t + 1, k]
                    d_drive += dh[k] * B[b, t, k]
                    dB[b, t, k] += dh[k] * drive
                    d_log_decay = dh[k] * states[t, k] * decay  # dL/d(dt A) through exp(dt A) h_{t-1}
                    d_step += d_log_decay * A[c, k]
                    dA_per_sequence[b, c, k] += d_log_decay * step
                    dh[k] *= decay  # the part of dL/dh_{t-1} that flows through h_t
                dx[b, t, c] = d_drive * step
                ddt[b, t, c] = d_drive * x[b, t, c] + d_step
    return dx, ddt, dA_per_sequence.sum(axis=0), dB, dC


def _arrays(*tensors: torch.Tensor) -> list[np.ndarray]:
    return [np.ascontiguousarray(t.detach().cpu().numpy()) for t in tensors]


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C):  # noqa: ANN001, ANN205 (torch's signature)
        ctx.save_for_backward(x, dt, A, B, C)
        return torch.from_numpy(_forward(*_arrays(x, dt, A, B, C)))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):  # noqa: ANN001, ANN205
        grads = _backward(*_arrays(*ctx.saved_tensors, dy))
        return tuple(torch.from_numpy(g) for g in grads)


def selective_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """The S6 scan, zero initial state: h_t = exp(dt_t A) * h_{t-1} + (dt_t x_t) B_t, y_t = h_t C_t.

    x, dt: (batch, length, d); A: (d, n) (negative for a stable scan); B, C: (batch, length, n); one dtype
    (float32 or float64), CPU. Returns y (batch, length, d). Zero-order hold on A, Euler on B (as the Mamba
    reference). Differentiable in every input.
    """
    if x.dim() != 3 or dt.shape != x.shape or B.dim() != 3 or C.shape != B.shape or B.shape[:2] != x.shape[:2]:
        raise ValueError(
            "selective_scan: expects x, dt (batch, length, d) and B, C (batch, length, n), got "
            f"x {tuple(x.shape)}, dt {tuple(dt.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    if A.shape != (x.shape[-1], B.shape[-1]):
        raise ValueError(f"selective_scan: A must be (d, n) = {(x.shape[-1], B.shape[-1])}, got {tuple(A.shape)}")
    if len({t.dtype for t in (x, dt, A, B, C)}) != 1 or x.dtype not in (torch.float32, torch.float64):
        raise ValueError("selective_scan: x, dt, A, B, C must share one dtype, float32 or float64")
    return _SelectiveScan.apply(x, dt, A, B, C)
