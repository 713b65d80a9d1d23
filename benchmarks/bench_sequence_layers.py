#!/usr/bin/env python
"""Forward time and peak memory of a transformer encoder and an LSTM on the default chip against float.

One run, same threads for both contenders: each model in float (``eval()`` under ``torch.no_grad()``, so the
encoder takes torch's fused fast path, the fastest float baseline) and ``crossbar.compile(model, "default",
seed=0)`` (programming timed apart; the preset's wire resistance set ideal unless ``--keep-wires``: IR drop
is solved once at programming and costs nothing per forward) evaluate the same batch. Contenders alternate
within each round (the order flips every round); the minimum and median over rounds are kept and the ratio
chip / float is taken on the minima. Peak memory: the process's peak resident set size during one call
above its size before the call, after warm-up, for each contender (Linux: freed heap memory returned to the
system by glibc ``malloc_trim`` first, then ``/proc/self/clear_refs`` resets the peak).

    transformer_encoder  nn.TransformerEncoder: 2 layers, d_model 256, 8 heads, feed-forward 1024, batch_first;
                         input (batch, length, 256)
    lstm                 nn.LSTM(256, 256, num_layers=2, batch_first=True); input (batch, length, 256)

    python benchmarks/bench_sequence_layers.py [--quick] [--threads 1] [--reps 5]
                                               [--out benchmarks/results/sequence_layers.json]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import configure_threads, machine_info, thread_pools, write_json_atomic

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "sequence_layers.json"
TARGET_RATIO = 2.0  # chip / float time, and peak memory (issue 19)


def build_models(torch: Any) -> dict[str, Any]:
    from torch import nn

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(256, 8, dim_feedforward=1024, batch_first=True)
    return {
        "transformer_encoder": nn.TransformerEncoder(layer, num_layers=2).eval(),
        "lstm": nn.LSTM(256, 256, num_layers=2, batch_first=True).eval(),
    }


def _kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory(call: Callable[[], object]) -> float | None:
    """Peak resident memory of one call above the resident memory before it, bytes (None off Linux)."""
    gc.collect()
    from crossbar.heap import return_freed_memory

    if not return_freed_memory():  # freed memory back to the system: RSS = live memory
        return None
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM, the peak resident set size
    except OSError:
        return None
    before = _kib("VmRSS")
    call()
    peak = _kib("VmHWM")
    return None if before is None or peak is None else 1024.0 * (peak - before)


def measure(name: str, model: Any, inputs: Any, reps: int, keep_wires: bool, torch: Any) -> dict[str, Any]:
    import crossbar

    config = crossbar.ChipConfig.preset("default")
    if not keep_wires:
        config = config.replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    start = time.perf_counter()
    chip = crossbar.compile(model, config, seed=0)
    compile_s = time.perf_counter() - start
    contenders = {"float": model, "chip": chip}
    samples: dict[str, list[float]] = {"float": [], "chip": []}
    with torch.no_grad():
        for module in contenders.values():
            module(inputs)  # warm-up (numba JIT, buffers)
        for round_ in range(reps):
            order = list(contenders.items())
            for label, module in order if round_ % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                module(inputs)
                samples[label].append(time.perf_counter() - start)
        memory = {label: peak_memory(lambda m=module: m(inputs)) for label, module in contenders.items()}
    times = {label: {"min_s": min(s), "median_s": statistics.median(s)} for label, s in samples.items()}
    ratio = times["chip"]["min_s"] / times["float"]["min_s"]
    memory_ratio = memory["chip"] / memory["float"] if memory["float"] and memory["chip"] is not None else None
    analog = sum(row.placement == "analog" for row in crossbar.report(chip).layers)
    print(
        f"{name:<20} input {tuple(inputs.shape)}: float {times['float']['min_s'] * 1e3:8.1f} ms, "
        f"chip {times['chip']['min_s'] * 1e3:8.1f} ms, ratio {ratio:5.2f} (target <= {TARGET_RATIO}); "
        f"peak memory float {_mib(memory['float'])}, chip {_mib(memory['chip'])}; "
        f"compile {compile_s:.2f} s; {analog} analog matrices"
    )
    return {
        "input_shape": list(inputs.shape),
        "compile_s": compile_s,
        "times": times,
        "ratio_chip_over_float": ratio,
        "peak_memory_bytes": memory,
        "memory_ratio_chip_over_float": memory_ratio,
        "analog_matrices": analog,
        "within_target": ratio <= TARGET_RATIO and (memory_ratio is None or memory_ratio <= TARGET_RATIO),
    }


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 8, length 32, 3 rounds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, help="timing rounds (default 5; quick: 3)")
    parser.add_argument("--batch", type=int, help="sequences per call (default 32; quick: 8)")
    parser.add_argument("--length", type=int, help="time steps per sequence (default 64; quick: 32)")
    parser.add_argument("--keep-wires", action="store_true", help="keep the preset's wire resistance (slow compile)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threading = configure_threads(args.threads, "default")
    import torch

    reps = args.reps or (3 if args.quick else 5)
    batch = args.batch or (8 if args.quick else 32)
    length = args.length or (32 if args.quick else 64)
    results: dict[str, Any] = {
        "machine": machine_info(threading),
        "thread_pools": thread_pools(),
        "settings": {
            "quick": args.quick,
            "reps": reps,
            "batch": batch,
            "length": length,
            "keep_wires": args.keep_wires,
        },
        "target_ratio": TARGET_RATIO,
        "models": {},
    }
    generator = torch.Generator().manual_seed(1)
    for name, model in build_models(torch).items():
        inputs = torch.randn(batch, length, 256, generator=generator)
        results["models"][name] = measure(name, model, inputs, reps, args.keep_wires, torch)
    results["loadavg_end"] = os.getloadavg()
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
