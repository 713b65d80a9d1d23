#!/usr/bin/env python
"""Whole models on the chip: time and peak memory against float, and output error against aihwkit.

Part 1, speed and memory. In one process, interleaved round by round, the steady-state forward (eval, under
``torch.no_grad()``) of

  resnet18_64   ResNet-18-shaped CNN (models/resnet.py), batch 32 at 3x64x64
  resnet18_224  the same, batch 32 at 3x224x224 (every convolution through the unfolded-patch engine, chunked)
  encoder       ``nn.TransformerEncoder`` (4 layers, d_model 256, 8 heads, ff 1024), batch 32 x 128 tokens
  stem_224      ResNet-18's 7x7/2 stem convolution alone, batch 32 at 3x224x224
  conv3x3_56    one of its stage-1 3x3 convolutions (64 -> 64 channels) alone, batch 32 at 64x56x56

as float torch and compiled on the default chip (``crossbar.compile(model, "default")``, ideal wires:
IR drop is a programming-time cost). Ratio chip/float per round, median over rounds. Peak memory: the
process's resident set sampled every 2 ms during one forward, above its level just before (after
``malloc_trim``), for each contender. Targets: chip/float time <= 2 and peak memory <= 2x float's.

Part 2, accuracy side by side with aihwkit 1.1's ``convert_to_analog`` (torch tiles, ``TorchInferenceRPUConfig``
with the default chip's settings: 256x256 tiles, 8-bit DAC and ADC, PCM noise model drifted to 1 h with global
drift compensation, output noise 0.04; ``bench_tile_engine.aihwkit_rpu_config``): the output error relative
to float, ||y - y_float|| / ||y_float||, mean over chip instances (seeds), for a Linear of fan-in 576, a small
ResNet, ResNet-18 at 64x64 (not with --quick) and the transformer encoder.

    python benchmarks/bench_operators.py [--quick] [--threads N] [--only stem_224,conv3x3_56] [--skip-speed]
        [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import available_cores, configure_threads, machine_info, write_json_atomic

TIME_TARGET = 2.0
MEMORY_TARGET = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 4, one round, two seeds (a smoke run)")
    parser.add_argument("--threads", type=int, default=min(2, available_cores()))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3, help="chip instances for the error table")
    parser.add_argument("--skip-aihwkit", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="the error table alone (part 2)")
    parser.add_argument("--only", help="comma-separated workloads to time (default: all); no error table")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "operators.json")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak resident memory above the level before the call, bytes (sampled every 2 ms)."""
    from crossbar.heap import return_freed_memory

    return_freed_memory()
    base = peak = _rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak, _rss_bytes()) - base


# ------------------------------------------------------------------------------------------------ models


def calibrated_bn(model: Any, shape: tuple[int, ...], seed: int) -> Any:
    """Batch-norm statistics from two random batches, so activations keep unit scale through the stages."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(shape, generator=generator))
    return model.eval()


def workloads(batch: int) -> dict[str, tuple[Any, Any]]:
    """name -> (float model in eval mode, input)."""
    import torch
    from torch import nn

    from models.resnet import resnet18

    torch.manual_seed(0)
    out: dict[str, tuple[Any, Any]] = {}
    net = calibrated_bn(resnet18(), (8, 3, 64, 64), 0)
    generator = torch.Generator().manual_seed(1)
    out["resnet18_64"] = (net, torch.randn(batch, 3, 64, 64, generator=generator))
    out["resnet18_224"] = (net, torch.randn(batch, 3, 224, 224, generator=generator))
    layer = nn.TransformerEncoderLayer(256, 8, 1024, dropout=0.0, batch_first=True)
    out["encoder"] = (nn.TransformerEncoder(layer, 4).eval(), torch.randn(batch, 128, 256, generator=generator))
    # Two of ResNet-18's convolutions alone at 224x224 input: the stem and a stage-1 3x3 (quick to program).
    out["stem_224"] = (nn.Conv2d(3, 64, 7, 2, 3, bias=False), torch.randn(batch, 3, 224, 224, generator=generator))
    out["conv3x3_56"] = (nn.Conv2d(64, 64, 3, 1, 1, bias=False), torch.randn(batch, 64, 56, 56, generator=generator))
    return out


def default_chip() -> Any:
    import crossbar

    return crossbar.ChipConfig.preset("default").replace(wires={"r_wl": 0.0, "r_bl": 0.0})


# ------------------------------------------------------------------------------------------ speed, memory


def time_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


_COMPILED: dict[int, tuple[Any, float]] = {}


def compiled_once(model: Any) -> tuple[Any, float]:
    """The model on the default chip (seed 0) and the seconds compiling took; one programming per model."""
    import warnings

    import crossbar

    if id(model) not in _COMPILED:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (attention stays digital until it has a converter)
            chip_model = crossbar.compile(model, default_chip(), seed=0).eval()
        _COMPILED[id(model)] = (chip_model, time.perf_counter() - start)
    return _COMPILED[id(model)]


def speed_and_memory(name: str, model: Any, x: Any, rounds: int) -> dict[str, Any]:
    import torch

    import crossbar

    chip_model, compile_s = compiled_once(model)
    contenders = {"float": lambda: model(x), "chip": lambda: chip_model(x)}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    with torch.no_grad():
        for fn in contenders.values():
            fn()  # warm-up (numba, allocator)
        for r in range(rounds):
            order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
            for key in order:
                times[key].append(time_once(contenders[key]))
        memory = {key: peak_memory(fn) for key, fn in contenders.items()}
    ratios = [c / f for c, f in zip(times["chip"], times["float"], strict=True)]
    result = {
        "input_shape": list(x.shape),
        "compile_s": compile_s,
        "float_s": statistics.median(times["float"]),
        "chip_s": statistics.median(times["chip"]),
        "time_ratio": statistics.median(ratios),
        "float_peak_bytes": memory["float"],
        "chip_peak_bytes": memory["chip"],
        "memory_ratio": memory["chip"] / max(memory["float"], 1),
        "samples_s": times,
        "analog_tiles": crossbar.report(chip_model).analog_tiles,
    }
    result["time_target_met"] = result["time_ratio"] <= TIME_TARGET
    result["memory_target_met"] = result["memory_ratio"] <= MEMORY_TARGET
    print(
        f"{name:<14} float {result['float_s']:7.3f} s  chip {result['chip_s']:7.3f} s"
        f"  ratio {result['time_ratio']:5.2f}"
        f"  peak MB float {memory['float'] / 2**20:7.1f} chip {memory['chip'] / 2**20:7.1f}"
        f"  ratio {result['memory_ratio']:5.2f}  (compile {compile_s:.1f} s)",
        flush=True,
    )
    return result


# ----------------------------------------------------------------------------------------------- accuracy


def relative_error(y: Any, reference: Any) -> float:
    return float((y - reference).norm() / reference.norm())


def crossbar_error(model: Any, x: Any, seed: int) -> float:
    import warnings

    import torch

    import crossbar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = crossbar.compile(model, default_chip(), seed=seed).eval()
    with torch.no_grad():
        return relative_error(compiled(x), model(x))


def aihwkit_error(model: Any, x: Any, seed: int) -> float:
    import copy

    import torch
    from aihwkit.nn.conversion import convert_to_analog
    from bench_tile_engine import aihwkit_rpu_config

    torch.manual_seed(seed)
    analog = convert_to_analog(copy.deepcopy(model), aihwkit_rpu_config()).eval()
    analog.program_analog_weights()
    analog.drift_analog_weights(3600.0)
    with torch.no_grad():
        return relative_error(analog(x), model(x))


def accuracy_models(batch: int, quick: bool) -> dict[str, tuple[Any, Any]]:
    import torch
    from torch import nn

    from models.resnet import resnet18, resnet_small

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    linear = nn.Sequential(nn.Linear(576, 64))
    conv = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1))  # fan-in 576, as the Linear
    small = calibrated_bn(resnet_small(), (8, 3, 32, 32), 3)
    layer = nn.TransformerEncoderLayer(256, 8, 1024, dropout=0.0, batch_first=True)
    models = {
        "linear_576": (linear, torch.randn(batch * 8, 576, generator=generator)),
        "conv3x3_64": (conv, torch.randn(batch, 64, 16, 16, generator=generator)),
        "resnet_small_32": (small, torch.randn(batch, 3, 32, 32, generator=generator)),
        "encoder": (nn.TransformerEncoder(layer, 2).eval(), torch.randn(batch, 32, 256, generator=generator)),
    }
    if not quick:  # programming ResNet-18 (11.7 M weights) takes a minute or more per chip instance
        big = calibrated_bn(resnet18(), (8, 3, 64, 64), 4)
        models["resnet18_64"] = (big, torch.randn(batch, 3, 64, 64, generator=generator))
    return models


def accuracy(batch: int, seeds: int, with_aihwkit: bool, quick: bool) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name, (model, x) in accuracy_models(batch, quick).items():
        row: dict[str, Any] = {"crossbar": [crossbar_error(model, x, s) for s in range(seeds)]}
        if with_aihwkit:
            try:
                row["aihwkit"] = [aihwkit_error(model, x, s) for s in range(seeds)]
            except Exception as exc:  # noqa: BLE001 (recorded: a model aihwkit cannot convert or run)
                row["aihwkit_failure"] = f"{type(exc).__name__}: {exc}"[:300]
        row = {**row, **{f"{k}_mean": statistics.mean(v) for k, v in row.items() if isinstance(v, list)}}
        table[name] = row
        theirs = f"{row['aihwkit_mean']:.4f}" if "aihwkit_mean" in row else row.get("aihwkit_failure", "-")
        print(f"{name:<16} crossbar {row['crossbar_mean']:.4f}  aihwkit {theirs}", flush=True)
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threading_info = configure_threads(args.threads, "default")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # models/
    batch = 4 if args.quick else 32
    rounds = 1 if args.quick else args.rounds
    seeds = 2 if args.quick else args.seeds
    info = machine_info(threading_info)
    print(f"threads {args.threads}, batch {batch}, rounds {rounds}, load {info.get('loadavg_start')}", flush=True)
    chosen = workloads(batch)
    if args.only:
        unknown = set(args.only.split(",")) - set(chosen)
        if unknown:
            raise SystemExit(f"--only: unknown workload {sorted(unknown)[0]!r} (choose from {', '.join(chosen)})")
        chosen = {name: chosen[name] for name in args.only.split(",")}
    speed = {} if args.skip_speed else {name: speed_and_memory(name, m, x, rounds) for name, (m, x) in chosen.items()}
    errors = {} if args.only else accuracy(min(batch, 8), seeds, not args.skip_aihwkit, args.quick)
    with contextlib.suppress(OSError):
        info["loadavg_end"] = os.getloadavg()
    data = {
        "benchmark": "operators",
        "settings": {"quick": args.quick, "batch": batch, "rounds": rounds, "seeds": seeds},
        "machine": info,
        "targets": {"time_ratio_max": TIME_TARGET, "memory_ratio_max": MEMORY_TARGET},
        "speed": speed,
        "error_vs_float": errors,
    }
    write_json_atomic(args.out, data)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
