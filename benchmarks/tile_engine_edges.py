"""The tile engine away from wide layers at large batches: the "edge" cases of ``bench_tile_engine.py``.

Each case times crossbar against its float baseline interleaved in one run (``run_rounds`` of the main
script: rotating order, settle pause, quiet-round selection, paired ratios) and records the threads it ran
with and the load average:

  one_thread   n x n at batch B with one thread everywhere (torch, every BLAS): numpy vs sim vs sim_cell,
               as a sweep worker runs (one process per core)
  batch1       a 1024x1024 layer at batch 1 with the run's threads: numpy vs sim (token-by-token latency)
  narrow       32 layers of 64x64 at batches 1, 16 and 256: the float nn.Sequential vs the compiled one
  s5           the shipped S5 digits model with B and C on tiles (``models.s5.bc_as_linear``): float vs
               ``crossbar.compile(model, default chip)`` on held-out sequences

``per_layer_profile`` splits the fixed cost of one narrow analog layer at batch 1 into the nested calls of
the forward path (TiledLinear.forward > AnalogTiles.matmul > engine.run_tiles > layer_task_kernel).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

# (case, ratio, limit): the floors (issue 14)
EDGE_TARGETS = (
    ("one_thread", "sim/numpy", 1.2),
    ("one_thread", "sim_cell/numpy", 2.0),
    ("batch1", "sim/numpy", 1.5),
    ("narrow", "sim/float", 2.0),
    ("s5", "sim/float", 1.5),
)


@contextlib.contextmanager
def threads_for_all(count: int) -> Iterator[None]:
    """torch and every BLAS / OpenMP pool threadpoolctl sees at ``count`` threads for the block."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(count):
            yield
    finally:
        torch.set_num_threads(before)


def loadavg() -> list[float] | None:
    with contextlib.suppress(OSError):
        return list(os.getloadavg())
    return None


def chip(cell: bool) -> Any:
    import crossbar

    config = crossbar.ChipConfig.preset("default").replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    return config.replace(read_noise={"cell_std": 0.02}) if cell else config


def timed_case(
    name: str,
    label: str,
    calls: dict[str, Callable[[], Any]],
    ratios: list[tuple[str, str]],
    threads: int,
    args: argparse.Namespace,
    timing: Any,
) -> dict[str, Any]:
    """Interleaved rounds of ``calls`` (``timing`` is the main script: Contender, run_rounds, ...)."""
    load_before = loadavg()
    contenders = [timing.Contender(key, fn) for key, fn in calls.items()]
    rounds = timing.run_rounds(contenders, args, timing.QUIET)
    every = list(range(len(rounds)))
    quiet = [i for i in every if (rounds[i]["foreign_load_cores"] or 0.0) < timing.QUIET_CORES]
    used = quiet if len(quiet) >= min(2, len(rounds)) else every
    samples = {c.name: c.samples for c in contenders}
    cpu = {c.name: c.cpu_samples for c in contenders}
    case = {
        "case": name,
        "label": label,
        "threads": threads,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "reps": len(rounds),
        "rounds": rounds,
        "rounds_used": used,
        "noisy": used is every and len(quiet) < len(rounds),
        "results": {c.name: c.summary(used) for c in contenders},
        "ratios": {f"{a}/{b}": timing.paired_ratio(samples[a], samples[b], used) for a, b in ratios},
        "ratios_cpu": {f"{a}/{b}": timing.paired_ratio(cpu[a], cpu[b], used) for a, b in ratios},
    }
    medians = ", ".join(f"{k} {v['median_s'] * 1e3:.3f} ms" for k, v in case["results"].items())
    shown = ", ".join(f"{k} {v:.2f}" for k, v in case["ratios"].items() if v is not None)
    shown_cpu = ", ".join(f"{k} {v:.2f}" for k, v in case["ratios_cpu"].items() if v is not None)
    print(f"{label} [{threads} thread(s)]: {medians}; wall {shown}; CPU {shown_cpu}", flush=True)
    return case


def one_thread_case(n: int, batch: int, args: argparse.Namespace, timing: Any) -> dict[str, Any]:
    import torch
    from torch import nn

    import crossbar

    torch.manual_seed(0)
    linear = nn.Linear(n, n)
    weight_t = linear.weight.detach().numpy().T.copy()
    x = torch.randn(batch, n, generator=torch.Generator().manual_seed(1))
    x_np = x.numpy()
    with threads_for_all(1):
        sim = crossbar.compile(nn.Sequential(linear), chip(False), seed=0).eval()
        sim_cell = crossbar.compile(nn.Sequential(linear), chip(True), seed=0).eval()
        calls = {"numpy": lambda: x_np @ weight_t, "sim": lambda: sim(x), "sim_cell": lambda: sim_cell(x)}
        ratios = [("sim", "numpy"), ("sim_cell", "numpy")]
        return timed_case("one_thread", f"{n}x{n} batch {batch}", calls, ratios, 1, args, timing)


def batch1_case(n: int, threads: int, args: argparse.Namespace, timing: Any) -> dict[str, Any]:
    import torch
    from torch import nn

    import crossbar

    torch.manual_seed(0)
    linear = nn.Linear(n, n)
    weight_t = linear.weight.detach().numpy().T.copy()
    x = torch.randn(1, n, generator=torch.Generator().manual_seed(2))
    x_np = x.numpy()
    sim = crossbar.compile(nn.Sequential(linear), chip(False), seed=0).eval()
    calls = {"numpy": lambda: x_np @ weight_t, "torch_linear": lambda: linear(x), "sim": lambda: sim(x)}
    ratios = [("sim", "numpy"), ("sim", "torch_linear")]
    return timed_case("batch1", f"{n}x{n} batch 1", calls, ratios, threads, args, timing)


def narrow_stack(layers: int = 32, width: int = 64) -> tuple[Any, Any]:
    """The float stack of ``layers`` nn.Linear(width, width) and its compiled copy on the default chip."""
    import torch
    from torch import nn

    import crossbar

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)]).eval()
    return model, crossbar.compile(model, chip(False), seed=0).eval()


def narrow_case(batch: int, threads: int, args: argparse.Namespace, timing: Any) -> dict[str, Any]:
    import torch

    model, sim = narrow_stack()
    x = torch.randn(batch, 64, generator=torch.Generator().manual_seed(3))
    calls = {"float": lambda: model(x), "sim": lambda: sim(x)}
    return timed_case("narrow", f"32 x (64x64) batch {batch}", calls, [("sim", "float")], threads, args, timing)


def s5_case(sequences: int, threads: int, args: argparse.Namespace, timing: Any) -> dict[str, Any]:
    import crossbar
    from models.data import sequential_digits
    from models.ssm_digits import variants

    _, _, x_test, _ = sequential_digits()
    x = x_test[:sequences]
    label, model = variants("s5")[1]  # B and C as real linears, so they go on tiles
    sim = crossbar.compile(model, "default", seed=0).eval()
    calls = {"float": lambda: model(x), "sim": lambda: sim(x)}
    return timed_case("s5", f"{label}, {len(x)} sequences of 64", calls, [("sim", "float")], threads, args, timing)


def per_layer_profile(batch: int, reps: int = 2000) -> dict[str, float]:
    """CPU microseconds per call of each nested step of one 64x64 analog layer's forward at ``batch`` (best
    of five runs of ``reps`` calls), next to the float nn.Linear; the differences are each step's own cost."""
    import numpy as np
    import torch

    from crossbar.engine import SMALL_PRODUCTS, layer_task_kernel, run_tiles
    from crossbar.gaussian import call_key

    model, sim = narrow_stack(layers=1)
    linear, layer = model[0], sim[0]
    tile, record = layer.tile, layer.tile.record
    x = torch.randn(batch, 64, generator=torch.Generator().manual_seed(4))
    x_np, bias, out = x.numpy(), linear.bias.detach().numpy(), np.empty((batch, 64), np.float32)
    key = np.uint64(3)
    steps: dict[str, Callable[[], Any]] = {
        "float nn.Linear": lambda: linear(x),
        "TiledLinear.forward (module call)": lambda: layer(x),
        "AnalogTiles.matmul": lambda: tile.matmul(x, linear.bias),
        "gaussian.call_key (noise key)": lambda: call_key(0, 12345),
        "engine.run_tiles": lambda: run_tiles(record, x_np, bias, key),
        "engine.layer_task_kernel (DAC+product+ADC+noise+bias)": lambda: layer_task_kernel(
            x_np, record.block_weights, record.to_code, record.from_code, record.noise_scale, record.cells, bias,
            record.dac_levels, record.dac_range, record.adc_levels, key, batch * 64 * 64 <= SMALL_PRODUCTS, 0, 0, 64,
            out,
        ),
    }  # fmt: skip
    result = {}
    for name, fn in steps.items():
        fn()
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            for _ in range(reps):
                fn()
            best = min(best, (time.process_time() - start) / reps)
        result[name] = best * 1e6
    return result


def print_profile(profile: dict[str, float], batch: int) -> None:
    print(f"\nCost of one 64x64 analog layer at batch {batch}, CPU us per call, one thread (best of 5; nested steps):")
    for name, us in profile.items():
        print(f"  {name:<58s} {us:8.2f}")


def run_edges(args: argparse.Namespace, timing: Any) -> dict[str, Any]:
    """Every edge case (batch 1, narrow and S5 on one thread and on the run's threads), the per-layer profile
    (one thread) and the verdicts against EDGE_TARGETS: on the CPU-time ratio for one-thread cases (on a
    loaded machine their wall time also counts other processes' time slices), on the wall-time ratio else."""
    import torch

    threads = torch.get_num_threads()
    cases = [one_thread_case(args.edge_n, args.edge_batch, args, timing)]
    for count in sorted({1, threads}):
        with threads_for_all(count) if count != threads else contextlib.nullcontext():
            cases.append(batch1_case(1024, count, args, timing))
            cases += [narrow_case(batch, count, args, timing) for batch in (1, 16, 256)]
            if not args.no_s5:
                cases.append(s5_case(args.s5_sequences, count, args, timing))
    with threads_for_all(1):
        profile = {str(batch): per_layer_profile(batch, reps) for batch, reps in ((1, 2000), (256, 100))}
    for batch, steps in profile.items():
        print_profile(steps, int(batch))
    verdicts = []
    for case in cases:
        judged = "ratios_cpu" if case["threads"] == 1 else "ratios"
        for name, key, limit in EDGE_TARGETS:
            value = case[judged].get(key)
            if case["case"] == name and value is not None:
                verdicts.append(
                    {
                        "case": case["label"],
                        "threads": case["threads"],
                        "ratio": key,
                        "clock": "cpu" if judged == "ratios_cpu" else "wall",
                        "value": value,
                        "wall_value": case["ratios"].get(key),
                        "limit": limit,
                        "status": "PASS" if value <= limit else "FAIL",
                    }
                )
    print("\nEdge targets (paired ratio <= limit; one-thread cases on CPU time, others on wall time):")
    for v in verdicts:
        print(
            f"  {v['case']:<44s} {v['threads']} thr {v['ratio']:>15s} = {v['value']:.2f} ({v['clock']}; wall "
            f"{v['wall_value']:.2f})  <= {v['limit']:g}  {v['status']}"
        )
    return {"cases": cases, "layer_profile_us": profile, "targets": verdicts}


def markdown_table(edges: dict[str, Any]) -> str:
    """The edge cases of a results JSON as the markdown table of benchmarks/README.md."""
    lines = [
        "| case | threads | crossbar ms (wall) | baseline ms (wall) | ratio wall | ratio CPU | floor | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in edges["cases"]:
        results = case["results"]
        for key, value in case["ratios"].items():
            num, den = key.split("/")
            limit = next((lim for name, k, lim in EDGE_TARGETS if name == case["case"] and k == key), None)
            judged = case["ratios_cpu"][key] if case["threads"] == 1 else value
            status = "" if limit is None or judged is None else ("met" if judged <= limit else "**not met**")
            lines.append(
                f"| {case['label']} ({num}) | {case['threads']} | {results[num]['median_s'] * 1e3:.3f} | "
                f"{den} {results[den]['median_s'] * 1e3:.3f} | {value:.2f} | {case['ratios_cpu'][key]:.2f} | "
                f"{'-' if limit is None else f'<= {limit:g}'} | {status} |"
            )
    return "\n".join(lines)
