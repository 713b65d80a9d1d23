#!/usr/bin/env python
"""Speed of Mamba's selective scan (S6), forward + backward, against the alternatives, in one run.

Contenders (each computes y_t = C_t h_t, h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t, and its gradients):
  loop           an indexed Python loop over time under autograd (as mamba-minimal and selective_scan_ref):
                 the baseline of every ratio
  ours           models.selective_scan.selective_scan: fused numba kernels, forward and analytic (adjoint)
                 backward, nothing of size (batch, length, d, n) stored
  adjoint_torch  the loop in torch, time-major, outside autograd, with the same adjoint backward as a torch loop
  chunk_cumsum   chunks of 16 steps: h_t = exp(S_t) cumsum_s(exp(-S_s) u_s) with S the cumulative log-decay,
                 a short loop over chunks for the carried state (overflows once a chunk decays by more than
                 ~88 nats, so it is not safe as it stands)
  chunk_log      the same in log space (Heinsen's logcumsumexp, positive and negative drives apart; stable)
  parallel       a Hillis-Steele parallel scan over the whole sequence (log2 L full-size steps)
Each contender's output is checked against a float64 run of ``ours`` (relative error in the JSON).

    python benchmarks/bench_scan.py [--threads 2] [--reps 3] [--large] [--out benchmarks/results/scan.json]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Any

from common import configure_threads, machine_info, write_json_atomic

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scan.json"
# (batch, length, d_inner, d_state): the shipped char-LM's training step; --large adds the Mamba paper's
# default state size at twice the width and length
CASES = [(16, 128, 128, 8)]
LARGE_CASE = (8, 256, 256, 16)


def contenders() -> dict[str, Any]:
    import torch

    from models.selective_scan import selective_scan

    class AdjointLoop(torch.autograd.Function):
        """h_t = a_t h_{t-1} + u_t, y_t = h_t C_t on time-major (L, b, d, n) tensors; backward by the adjoint."""

        @staticmethod
        def forward(ctx, a, u, C):  # noqa: ANN001, ANN205
            h = torch.empty_like(u)
            h[0] = u[0]
            for t in range(1, u.shape[0]):
                torch.addcmul(u[t], a[t], h[t - 1], out=h[t])
            ctx.save_for_backward(a, h, C)
            return (h @ C.unsqueeze(-1)).squeeze(-1)

        @staticmethod
        def backward(ctx, dy):  # noqa: ANN001, ANN205
            a, h, C = ctx.saved_tensors
            dh = dy.unsqueeze(-1) * C.unsqueeze(-2)
            for t in range(dh.shape[0] - 2, -1, -1):
                dh[t].addcmul_(a[t + 1], dh[t + 1])
            da = torch.zeros_like(a)
            torch.mul(dh[1:], h[:-1], out=da[1:])
            return da, dh, (dy.unsqueeze(-2) @ h).squeeze(-2)

    def adjoint_torch(x, dt, A, B, C):  # noqa: ANN001, ANN202
        dt_t = dt.transpose(0, 1).unsqueeze(-1)
        drive = (dt_t * x.transpose(0, 1).unsqueeze(-1)) * B.transpose(0, 1).unsqueeze(-2)
        y = AdjointLoop.apply(torch.exp(dt_t * A), drive, C.transpose(0, 1).contiguous())
        return y.transpose(0, 1)

    def discretise(x, dt, A, B):  # noqa: ANN001, ANN202
        return torch.exp(dt.unsqueeze(-1) * A), (dt * x).unsqueeze(-1) * B.unsqueeze(2)  # (b, L, d, n)

    def loop(x, dt, A, B, C):  # noqa: ANN001, ANN202
        decay, drive = discretise(x, dt, A, B)
        h, ys = x.new_zeros(decay[:, 0].shape), []
        for t in range(x.shape[1]):
            h = decay[:, t] * h + drive[:, t]
            ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
        return torch.stack(ys, 1)

    def carry(intra, decay_from_start):  # noqa: ANN001, ANN202
        """Add each chunk's incoming state; intra, decay_from_start (b, chunks, T, d, n) -> h (b, L, d, n)."""
        h, chunks = intra.new_zeros(intra[:, 0, 0].shape), []
        for c in range(intra.shape[1]):
            chunks.append(intra[:, c] + decay_from_start[:, c] * h.unsqueeze(1))
            h = chunks[-1][:, -1]
        return torch.stack(chunks, 1).flatten(1, 2)

    def chunked(x, dt, A, B, C, T, log_space):  # noqa: ANN001, ANN202
        b, L, d = x.shape
        log_decay = (dt.unsqueeze(-1) * A).view(b, L // T, T, d, -1)
        drive = ((dt * x).unsqueeze(-1) * B.unsqueeze(2)).view(b, L // T, T, d, -1)
        S = log_decay.cumsum(2)
        if log_space:
            magnitude = torch.log(drive.abs().clamp_min(1e-38))
            pos = torch.logcumsumexp(torch.where(drive > 0, magnitude, -math.inf) - S, 2)
            neg = torch.logcumsumexp(torch.where(drive < 0, magnitude, -math.inf) - S, 2)
            intra = torch.exp(S + pos) - torch.exp(S + neg)
        else:
            intra = torch.exp(S) * torch.cumsum(drive * torch.exp(-S), 2)
        h = carry(intra, torch.exp(S))
        return (h @ C.unsqueeze(-1)).squeeze(-1)

    def parallel(x, dt, A, B, C):  # noqa: ANN001, ANN202
        a, h = discretise(x, dt, A, B)
        k = 1
        while k < x.shape[1]:  # after the step with offset k, h_t holds the sum over the last 2k steps
            h = torch.cat([h[:, :k], a[:, k:] * h[:, :-k] + h[:, k:]], 1)
            a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], 1)
            k *= 2
        return (h @ C.unsqueeze(-1)).squeeze(-1)

    return {
        "loop": loop,
        "ours": selective_scan,
        "adjoint_torch": adjoint_torch,
        "chunk_cumsum": lambda *args: chunked(*args, T=16, log_space=False),
        "chunk_log": lambda *args: chunked(*args, T=64, log_space=True),
        "parallel": parallel,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds per case (the minimum is kept)")
    parser.add_argument("--large", action="store_true", help=f"also time {LARGE_CASE} (minutes for the loop)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threading = configure_threads(args.threads, "default")
    import torch

    from models.selective_scan import selective_scan

    fns = contenders()
    results: dict[str, Any] = {"machine": machine_info(threading), "cases": []}
    for batch, length, d, n in CASES + ([LARGE_CASE] if args.large else []):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, length, d, generator=g)
        dt = torch.nn.functional.softplus(torch.randn(batch, length, d, generator=g) - 3)
        A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
        B, C = (torch.randn(batch, length, n, generator=g) for _ in range(2))
        reference = selective_scan(*(t.double() for t in (x, dt, A, B, C)))
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
        errors: dict[str, float] = {}
        for round_ in range(args.reps):
            names = list(fns)
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                leaves = [t.clone().requires_grad_() for t in (x, dt, A, B, C)]
                start = time.perf_counter()
                y = fns[name](*leaves)
                middle = time.perf_counter()
                y.backward(torch.ones_like(y))
                samples[name].append((middle - start, time.perf_counter() - middle))
                errors[name] = float((y.detach().double() - reference).abs().max() / reference.abs().max())
        case: dict[str, Any] = {"batch": batch, "length": length, "d_inner": d, "d_state": n, "contenders": {}}
        loop_total = min(f + b for f, b in samples["loop"])
        for name, times in samples.items():
            total = min(f + b for f, b in times)
            case["contenders"][name] = {
                "forward_s": min(f for f, _ in times),
                "backward_s": min(b for _, b in times),
                "total_s": total,
                "median_total_s": statistics.median(f + b for f, b in times),
                "speedup_vs_loop": loop_total / total,
                "max_rel_error": errors[name],
            }
            print(
                f"b{batch} L{length} d{d} n{n}  {name:<13} fwd {case['contenders'][name]['forward_s']:7.3f} s"
                f"  bwd {case['contenders'][name]['backward_s']:7.3f} s  x{loop_total / total:6.1f} vs loop"
                f"  err {errors[name]:.1e}",
                flush=True,
            )
        results["cases"].append(case)
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
