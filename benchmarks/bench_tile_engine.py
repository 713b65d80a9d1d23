#!/usr/bin/env python
"""Speed of crossbar's tile engine against a plain float matmul and aihwkit's pure-torch inference tile.

Times, in one process and with the same thread settings for every contender, the steady-state forward
pass of an ``nn.Linear(n, n)`` (n = 1024 and 4096, batch 64 and 1024) on 256x256 tiles with 8-bit DAC and
ADC, programming error, drift and read noise:

  numpy         float32 ``x @ W.T`` (the reference every ratio is taken against)
  torch_linear  the float ``nn.Linear`` itself (informational)
  tile_products the products of the DAC-converted inputs with each row block's tiles alone (numpy, all
                threads; informational): the floor any tile simulator with one ADC per tile has to compute,
                so aihwkit/tile_products bounds the aihwkit/sim ratio reachable with this BLAS
  sim           ``crossbar.compile(nn.Sequential(lin), ChipConfig.preset("default"), seed=0)``
  sim_cell      the same chip with exact per-cell read noise, ``read_noise={"cell_std": 0.02}``
  aihwkit       ``TorchInferenceRPUConfig`` with the same tile size, DAC/ADC, PCM device, drift to 1 h,
                global drift compensation and output noise (programmed and drifted before timing)

Programming (compile) time is reported separately and never counted in the forward time. Contenders are
interleaved within each repetition round (in a rotating order) so machine noise affects them alike; before
each sample the process sleeps briefly so worker threads the previous contender left spinning (OpenBLAS,
libgomp) do not bill their spin to the next one, then makes one untimed call so each contender is timed in
its own steady state. Rounds during which other processes took CPU are left out when enough quiet ones
remain, and ratios are paired (median over rounds of the ratio within a round). The preset's wire
resistance (IR drop, a programming-time cost only) is set ideal unless ``--keep-wires``. A profile of where
the simulator's time goes at batch 1024 is appended; see benchmarks/README.md.

    python benchmarks/bench_tile_engine.py [--quick] [--threads N] [--out benchmarks/results/tile_engine.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from common import available_cores, configure_threads, machine_info, thread_pools, write_json_atomic
from tile_engine_edges import markdown_table, run_edges

TILE = 256
BITS = 8
TARGET_BATCH = 1024
TARGETS = (
    # (name, numerator, denominator, limit, kind) -- "max": num/den <= limit; "min": num/den >= limit
    ("default chip within 1.5x of numpy", "sim", "numpy", 1.5, "max"),
    ("cell read-noise mode within 2.5x of numpy", "sim_cell", "numpy", 2.5, "max"),
    ("sim at least 5x faster than aihwkit", "aihwkit", "sim", 5.0, "min"),
)
RATIOS = (
    ("sim", "numpy"),
    ("sim_cell", "numpy"),
    ("tile_products", "numpy"),
    ("aihwkit", "numpy"),
    ("aihwkit", "sim"),
    ("aihwkit", "tile_products"),
)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "tile_engine.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: n=1024 only, few repetitions")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default: %(default)s)")
    parser.add_argument(
        "--threads",
        type=int,
        default=available_cores(),
        help="threads for every library (OMP/OpenBLAS/MKL/numba env vars and torch.set_num_threads); "
        "default: the cores available (%(default)s)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="layer sizes n (default 1024 4096; quick: 1024)")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1024], help="batch sizes (default 64 1024)")
    parser.add_argument(
        "--case-budget",
        type=float,
        help="seconds of timing per (n, batch) case; sets the repetition count (default 15; quick: 4)",
    )
    parser.add_argument("--min-reps", type=int, help="fewest repetition rounds per case (default 3; quick: 2)")
    parser.add_argument("--max-reps", type=int, default=15, help="most repetition rounds per case (default 15)")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.15,
        help="pause in seconds before each sample, so idle worker threads stop spinning (default 0.15)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before each round, wait up to this many seconds for other processes to go quiet (default 10)",
    )
    parser.add_argument(
        "--quiet-budget",
        type=float,
        help="most seconds of such waiting in the whole run (default 120; quick: 20)",
    )
    parser.add_argument(
        "--omp-wait-policy",
        choices=("default", "passive", "active"),
        default="default",
        help="OMP_WAIT_POLICY for every OpenMP runtime in the process (default: leave unset)",
    )
    parser.add_argument(
        "--keep-wires",
        action="store_true",
        help="keep the preset's wire resistance (IR drop, solved at programming time: very slow at n=4096); "
        "default: ideal wires, as the aihwkit contender",
    )
    parser.add_argument("--no-aihwkit", action="store_true", help="skip the aihwkit contender")
    parser.add_argument("--no-edges", action="store_true", help="skip the edge cases (tile_engine_edges.py)")
    parser.add_argument("--edges-only", action="store_true", help="only the edge cases, not the n x n table")
    parser.add_argument("--edge-n", type=int, help="layer size of the one-thread edge case (default 4096; quick 1024)")
    parser.add_argument("--edge-batch", type=int, help="batch of the one-thread edge case (default 1024; quick 256)")
    parser.add_argument("--no-s5", action="store_true", help="skip the S5 edge case (needs models/)")
    parser.add_argument(
        "--s5-sequences", type=int, help="held-out digit sequences in the S5 edge case (default 540; quick 128)"
    )
    parser.add_argument(
        "--table", action="store_true", help="print the markdown table of the edge cases in --out and exit"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the simulator profile")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.sizes is None:
        args.sizes = [1024] if args.quick else [1024, 4096]
    if args.case_budget is None:
        args.case_budget = 4.0 if args.quick else 15.0
    if args.quiet_budget is None:
        args.quiet_budget = 20.0 if args.quick else 120.0
    if args.min_reps is None:
        args.min_reps = 2 if args.quick else 3
    args.max_reps = max(args.max_reps, args.min_reps)
    if args.edge_n is None:
        args.edge_n = 1024 if args.quick else 4096
    if args.edge_batch is None:
        args.edge_batch = 256 if args.quick else 1024
    if args.s5_sequences is None:
        args.s5_sequences = 128 if args.quick else 540
    if args.edges_only and args.no_edges:
        parser.error("--edges-only and --no-edges exclude each other")
    return args


# ----------------------------------------------------------------------------------------------- timing


class LoadMonitor:
    """CPU time other processes (and the hypervisor, as steal) used while we measured, in cores.

    Reads /proc/stat (all CPUs) and /proc/self/stat (this process, all threads): foreign = busy - own.
    Elsewhere than Linux it reports None and nothing waits.
    """

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.available = self._read() is not None
        self._start: tuple[int, int, float] | None = None

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as handle:
                fields = [int(v) for v in handle.readline().split()[1:9]]
            with open("/proc/self/stat") as handle:
                own_fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        return busy, int(own_fields[11]) + int(own_fields[12])  # utime + stime

    def start(self) -> None:
        reading = self._read()
        self._start = None if reading is None else (*reading, time.perf_counter())

    def stop(self) -> float | None:
        reading = self._read()
        if reading is None or self._start is None:
            return None
        busy0, own0, t0 = self._start
        wall = max(time.perf_counter() - t0, 1e-9)
        return max(0.0, (reading[0] - busy0) - (reading[1] - own0)) / self.tick / wall

    def wait_for_quiet(self, threshold: float, max_wait: float, window: float = 0.5) -> float:
        """Sleep in windows until other processes use under ``threshold`` cores (or ``max_wait`` passes)."""
        if not self.available or max_wait <= 0:
            return 0.0
        start = time.perf_counter()
        while True:
            self.start()
            time.sleep(window)
            load = self.stop()
            waited = time.perf_counter() - start
            if load is None or load < threshold or waited >= max_wait:
                return waited


@dataclass
class Contender:
    name: str
    fn: Callable[[], Any]
    estimate: float = 0.0  # seconds per call, from warmup
    inner: int = 1  # calls per timed sample
    samples: list[float] = field(default_factory=list)  # seconds per call, one per round
    cpu_samples: list[float] = field(default_factory=list)  # CPU seconds of the process per call, one per round

    def add(self, sample: tuple[float, float]) -> None:
        self.samples.append(sample[0])
        self.cpu_samples.append(sample[1])

    def summary(self, rounds: list[int] | None = None) -> dict[str, Any]:
        chosen = self.samples if rounds is None else [self.samples[i] for i in rounds]
        cpu = self.cpu_samples if rounds is None else [self.cpu_samples[i] for i in rounds]
        return {
            "median_s": statistics.median(chosen),
            "min_s": min(chosen),
            "max_s": max(chosen),
            "cpu_median_s": statistics.median(cpu),
            "reps": len(chosen),
            "calls_per_sample": self.inner,
            "samples_s": self.samples,
            "cpu_samples_s": self.cpu_samples,
        }


PRIMER_LIMIT_S = 0.75  # calls slower than this are not preceded by an untimed primer call
MIN_SAMPLE_S = 0.05  # cheap calls are repeated within one sample until it lasts about this long
QUIET_CORES = 0.25  # a round is "quiet" when other processes used less than this many cores during it


def timed_sample(fn: Callable[[], Any], inner: int, settle: float, primer: bool) -> tuple[float, float]:
    """Seconds per call, wall clock and CPU time of the process (all its threads): settle, optionally one
    untimed call, then ``inner`` timed back-to-back calls. On a loaded machine the CPU time of a one-thread
    call is what it costs; its wall time also counts the time slices other processes took."""
    if settle > 0:
        time.sleep(settle)
    if primer:
        fn()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner, (time.process_time() - cpu) / inner


def warm_up(contender: Contender, settle: float) -> None:
    contender.fn()  # first call: JIT, buffer allocation, caches
    contender.estimate = timed_sample(contender.fn, 1, settle, primer=False)[0]
    contender.inner = max(1, min(50, math.ceil(MIN_SAMPLE_S / max(contender.estimate, 1e-6))))


def sample_cost(contender: Contender, settle: float) -> float:
    primer = contender.estimate < PRIMER_LIMIT_S
    return settle + contender.estimate * (contender.inner + primer)


@dataclass
class Quiet:
    """Waiting for other processes to go quiet before a round: per-round cap and what is left overall."""

    monitor: LoadMonitor
    per_round_s: float
    budget_s: float
    waited_s: float = 0.0

    def wait(self) -> float:
        cap = min(self.per_round_s, max(0.0, self.budget_s - self.waited_s))
        waited = self.monitor.wait_for_quiet(QUIET_CORES, cap)
        self.waited_s += waited
        return waited


def run_rounds(contenders: list[Contender], args: argparse.Namespace, quiet: Quiet) -> list[dict[str, Any]]:
    """Interleaved repetition rounds, the order rotating each round; returns what each round saw."""
    for contender in contenders:
        warm_up(contender, args.settle)
    round_cost = sum(sample_cost(c, args.settle) for c in contenders)
    reps = int(min(args.max_reps, max(args.min_reps, args.case_budget // max(round_cost, 1e-9))))
    rounds = []
    for rep in range(reps):
        waited = quiet.wait()
        quiet.monitor.start()
        shift = rep % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        for contender in order:
            primer = contender.estimate < PRIMER_LIMIT_S
            contender.add(timed_sample(contender.fn, contender.inner, args.settle, primer))
        load = quiet.monitor.stop()
        rounds.append({"order": [c.name for c in order], "waited_s": waited, "foreign_load_cores": load})
    return rounds


def measure(fn: Callable[[], Any], reps: int, settle: float, quiet: Quiet) -> dict[str, Any]:
    """Median/min of ``reps`` samples of one piece, after a warmup, waiting for quiet before each."""
    contender = Contender("piece", fn)
    warm_up(contender, settle)
    loads = []
    for _ in range(reps):
        quiet.wait()
        quiet.monitor.start()
        primer = contender.estimate < PRIMER_LIMIT_S
        contender.add(timed_sample(fn, contender.inner, settle, primer))
        loads.append(quiet.monitor.stop())
    return {**contender.summary(), "foreign_load_cores": loads}


def paired_ratios(samples: dict[str, list[float]], rounds: list[int]) -> dict[str, float | None]:
    return {
        f"{a}/{b}": paired_ratio(samples[a], samples[b], rounds) if a in samples and b in samples else None
        for a, b in RATIOS
    }


def paired_ratio(num: list[float], den: list[float], rounds: list[int]) -> float | None:
    """Median over rounds of num/den measured in the same round (robust to load that changes between rounds)."""
    values = [num[i] / den[i] for i in rounds if den[i] > 0]
    return statistics.median(values) if values else None


# ------------------------------------------------------------------------------------------ contenders


def aihwkit_rpu_config() -> Any:
    """aihwkit's pure-torch inference tile with the settings of crossbar's default chip."""
    from aihwkit.inference.compensation.drift import GlobalDriftCompensation
    from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType

    config = TorchInferenceRPUConfig()
    config.mapping.max_input_size = TILE
    config.mapping.max_output_size = TILE
    config.mapping.weight_scaling_omega = 1.0
    config.mapping.weight_scaling_columnwise = True
    config.forward.inp_res = 1.0 / (2**BITS - 2)
    config.forward.out_res = 1.0 / (2**BITS - 2)
    config.forward.inp_bound = 1.0
    config.forward.out_bound = 12.0
    config.forward.out_noise = 0.04
    config.forward.noise_management = NoiseManagementType.ABS_MAX
    config.forward.bound_management = BoundManagementType.NONE
    config.noise_model = PCMLikeNoiseModel(g_max=25.0)
    config.drift_compensation = GlobalDriftCompensation()
    return config


def build_aihwkit(linear: Any) -> Any:
    from aihwkit.nn.conversion import convert_to_analog
    from torch import nn

    model = convert_to_analog(nn.Sequential(linear), aihwkit_rpu_config())
    model.eval()
    model.program_analog_weights()
    model.drift_analog_weights(3600.0)
    return model


def benchmark_chip(keep_wires: bool, cell: bool) -> Any:
    """The default preset; with ideal wires unless asked (IR drop is a programming-time cost only, and
    aihwkit's tile here has none), and with per-cell read noise for the ``sim_cell`` contender."""
    import crossbar

    chip = crossbar.ChipConfig.preset("default")
    if not keep_wires and "wires" in chip.to_dict():
        chip = chip.replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    if cell:
        chip = chip.replace(read_noise={"cell_std": 0.02})
    return chip


def build_sim(linear: Any, cell: bool, keep_wires: bool = False) -> Any:
    from torch import nn

    import crossbar

    chip = benchmark_chip(keep_wires, cell)
    compiled = crossbar.compile(nn.Sequential(linear), chip, seed=0)
    compiled.eval()
    if not isinstance(compiled[0], crossbar.TiledLinear):
        raise RuntimeError(f"crossbar.compile did not map the layer: got {type(compiled[0]).__name__}")
    return compiled


def timed_build(build: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    built = build()
    return built, time.perf_counter() - start


def relative_error(y: Any, reference: Any) -> float:
    import numpy as np

    y = np.asarray(y, dtype=np.float64)
    return float(np.linalg.norm(y - reference) / np.linalg.norm(reference))


# --------------------------------------------------------------------------------------------- profile


def sim_phases(tile: Any, x_np: Any, bias: Any) -> dict[str, Callable[[], Any]]:
    """The phases of ``crossbar.engine.run_tiles`` for one tile and a whole batch, each callable alone."""
    import numpy as np

    from crossbar.engine import adc_accumulate_kernel, convert_inputs, noise_bias_kernel

    record = tile.record
    grid, batch = record.grid, x_np.shape[0]
    blocks = np.empty((grid.row_blocks, batch, grid.rows), np.float32)
    scales = np.empty((batch, grid.row_blocks), np.float32)
    cells = record.cell_variance is not None
    squares = np.empty((batch, grid.in_features), np.float32) if cells else np.zeros((0, 0), np.float32)
    out = np.empty((batch, grid.out_features), np.float32)
    product = np.empty_like(out)
    cell_var = np.zeros_like(out) if cells else np.zeros((0, 0), np.float32)

    def products() -> None:
        for r in range(grid.row_blocks):
            np.dot(blocks[r], record.block_weights[r], out=product)
        if cells:
            np.dot(squares, record.cells, out=cell_var)

    def adc() -> None:
        for r in range(grid.row_blocks):
            adc_accumulate_kernel(
                product, record.to_code[r], record.from_code[r], record.adc_levels, scales[:, r], out, r == 0
            )

    return {
        "DAC (dac_kernel)": lambda: convert_inputs(record, x_np, blocks, scales, squares),
        "tile products (BLAS, per row block)": products,
        "ADC + digital scales + sum (adc_accumulate_kernel)": adc,
        "noise draws + bias (noise_bias_kernel)": lambda: noise_bias_kernel(
            out, scales, record.noise_scale, cell_var, np.uint64(7), 0, 0, bias
        ),
    }


def profile_sim(
    models: dict[str, Any], linear: Any, batch: int, args: argparse.Namespace, quiet: Quiet
) -> dict[str, Any]:
    """Where the simulator's time goes at one batch size: each phase of ``crossbar.engine.run_tiles`` timed
    alone on one thread over the whole batch (the forward runs them in parallel tasks), and the forward."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    x = torch.randn(batch, linear.in_features, generator=torch.Generator().manual_seed(7))
    profile: dict[str, Any] = {"n": linear.in_features, "batch": batch, "modes": {}}
    threads = torch.get_num_threads()
    for mode, compiled in models.items():
        phases = sim_phases(compiled[0].tile, x.numpy(), linear.bias.detach().numpy())
        times: dict[str, list[float]] = {}
        with torch.no_grad():
            for _ in range(args.min_reps + 2):
                quiet.wait()
                time.sleep(args.settle)
                start = time.perf_counter()
                compiled(x)
                times.setdefault(f"forward total ({threads} threads)", []).append(time.perf_counter() - start)
                torch.set_num_threads(1)
                try:
                    with threadpool_limits(1):
                        for name, phase in phases.items():
                            start = time.perf_counter()
                            phase()
                            times.setdefault(name, []).append(time.perf_counter() - start)
                finally:
                    torch.set_num_threads(threads)
        profile["modes"][mode] = {name: float(np.median(values[1:])) for name, values in times.items()}
    return profile


def print_profile(profile: dict[str, Any]) -> None:
    print(f"\nWhere the simulator's forward goes, n={profile['n']}, batch {profile['batch']} (medians):")
    for mode, phases in profile["modes"].items():
        forward = {k: v for k, v in phases.items() if k.startswith("forward total")}
        serial = {k: v for k, v in phases.items() if k not in forward}
        for name, seconds in forward.items():
            print(f"  [{mode}] {name} {seconds * 1e3:.2f} ms; its phases alone, on one thread:")
        total = sum(serial.values())
        for name, seconds in serial.items():
            print(f"    {name:<52s} {seconds * 1e3:9.2f} ms  {seconds / total * 100:5.1f}%")


# ------------------------------------------------------------------------------------------------ main


def ratio(times: dict[str, float], num: str, den: str) -> float | None:
    if num in times and den in times and times[den] > 0:
        return times[num] / times[den]
    return None


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(cases: list[dict[str, Any]], names: list[str]) -> None:
    head = ["n", "batch", "rounds"] + [f"{name} ms" for name in names] + [f"{a}/{b}" for a, b in RATIOS]
    rows = []
    for case in cases:
        med = {k: v["median_s"] for k, v in case["results"].items()}
        low = {k: v["min_s"] for k, v in case["results"].items()}
        used = f"{len(case['rounds_used'])}/{case['reps']}" + ("*" if case["noisy"] else "")
        cells = [str(case["n"]), str(case["batch"]), used]
        cells += [f"{fmt_ms(med.get(name))} ({fmt_ms(low.get(name))})" for name in names]
        cells += [fmt_ratio(case["ratios"].get(f"{a}/{b}")) for a, b in RATIOS]
        rows.append(cells)
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    print(
        "\nForward time per call, median (min) ms over the rounds used (quiet ones; * = too few quiet rounds, "
        "all used);\nratios: median over those rounds of the ratio measured within each round"
    )
    for row in [head, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def evaluate_targets(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    verdicts = []
    for case in cases:
        if case["batch"] != TARGET_BATCH:
            continue
        for label, num, den, limit, kind in TARGETS:
            key = f"{num}/{den}"
            value = case["ratios"].get(key)
            if value is None:
                status = "SKIP"
            else:
                ok = value <= limit if kind == "max" else value >= limit
                status = "PASS" if ok else "FAIL"
            verdicts.append(
                {
                    "n": case["n"],
                    "batch": case["batch"],
                    "target": label,
                    "ratio": key,
                    "limit": limit,
                    "kind": kind,
                    "value": value,
                    "value_ratio_of_medians": case["ratios_of_medians"].get(key),
                    "value_ratio_of_mins": case["ratios_of_mins"].get(key),
                    "noisy": case["noisy"],
                    "status": status,
                }
            )
    return verdicts


def print_targets(verdicts: list[dict[str, Any]]) -> None:
    print(f"\nTargets (batch {TARGET_BATCH}; paired ratio, then [ratio of medians, ratio of mins])")
    for v in verdicts:
        op = "<=" if v["kind"] == "max" else ">="
        print(
            f"  n={v['n']:<5d} {v['target']:<42s} {v['ratio']:>14s} = {fmt_ratio(v['value'])} "
            f"[{fmt_ratio(v['value_ratio_of_medians'])}, {fmt_ratio(v['value_ratio_of_mins'])}] "
            f"{op} {v['limit']:g}  {v['status']}" + ("  (noisy machine)" if v["noisy"] else "")
        )


def run_size(
    n: int, args: argparse.Namespace, quiet: Quiet
) -> tuple[list[dict[str, Any]], dict[str, float], dict | None]:
    """Program every contender for one layer size, time each batch size, then profile the simulator."""
    import torch

    torch.manual_seed(0)
    linear = torch.nn.Linear(n, n)
    models: dict[str, Any] = {}
    build_s: dict[str, float] = {}
    models["sim"], build_s["sim"] = timed_build(lambda: build_sim(linear, False, args.keep_wires))
    models["sim_cell"], build_s["sim_cell"] = timed_build(lambda: build_sim(linear, True, args.keep_wires))
    if not args.no_aihwkit:
        models["aihwkit"], build_s["aihwkit"] = timed_build(lambda: build_aihwkit(linear))
    print(f"n={n}: programming/compile s: " + ", ".join(f"{k} {v:.2f}" for k, v in build_s.items()), flush=True)
    cases = [run_case(linear, models, batch, args, quiet) for batch in args.batches]
    profile = None
    if not args.no_profile and TARGET_BATCH in args.batches:
        profile = profile_sim({k: models[k] for k in ("sim", "sim_cell")}, linear, TARGET_BATCH, args, quiet)
        print_profile(profile)
    return cases, build_s, profile


def run_case(linear: Any, models: dict[str, Any], batch: int, args: argparse.Namespace, quiet: Quiet) -> dict[str, Any]:
    """Time every contender on one (n, batch), interleaved."""
    import numpy as np
    import torch

    n = linear.in_features
    weight_np = linear.weight.detach().numpy().copy()
    x = torch.randn(batch, n, generator=torch.Generator().manual_seed(1000 + batch))
    x_np = x.numpy()
    tile = models["sim"][0].tile
    word_lines = tile.quantize_inputs(x_np)[0]
    calls: dict[str, Callable[[], Any]] = {
        "numpy": lambda: x_np @ weight_np.T,
        "torch_linear": lambda: linear(x),
        # the floor of any tile simulator: each row block's product alone (numpy, all threads), no DAC/ADC
        "tile_products": lambda: np.matmul(word_lines, tile.block_weights),
        **{name: (lambda model=model: model(x)) for name, model in models.items()},
    }
    # Sanity: every contender computes the same layer (relative error vs float64, first rows only).
    rows = min(batch, 64)
    ref_nobias = x_np[:rows].astype(np.float64) @ weight_np.astype(np.float64).T
    ref = ref_nobias + linear.bias.detach().numpy().astype(np.float64)
    errors = {}
    for name, fn in calls.items():
        if name == "tile_products":  # partial sums per row block, not the layer's output
            continue
        y = fn()
        y = y.detach().numpy() if isinstance(y, torch.Tensor) else y
        errors[name] = relative_error(y[:rows], ref_nobias if name == "numpy" else ref)
    contenders = [Contender(name, fn) for name, fn in calls.items()]
    case_start = time.perf_counter()
    rounds = run_rounds(contenders, args, quiet)
    every = list(range(len(rounds)))
    quiet_rounds = [i for i in every if (rounds[i]["foreign_load_cores"] or 0.0) < QUIET_CORES]
    # Judge on the rounds nobody else disturbed when there are at least two of them, else on all (flagged).
    used = quiet_rounds if len(quiet_rounds) >= min(2, len(rounds)) else every
    results = {c.name: c.summary(used) for c in contenders}
    samples = {c.name: c.samples for c in contenders}
    med = {k: v["median_s"] for k, v in results.items()}
    low = {k: v["min_s"] for k, v in results.items()}
    reps = len(rounds)
    case = {
        "n": n,
        "batch": batch,
        "reps": reps,
        "wall_s": time.perf_counter() - case_start,
        "relative_error_vs_float": errors,
        "rounds": rounds,
        "rounds_used": used,
        "noisy": used is every and len(quiet_rounds) < len(rounds),
        "results": results,
        "ratios": paired_ratios(samples, used),
        "ratios_all_rounds": paired_ratios(samples, every),
        "ratios_of_medians": {f"{a}/{b}": ratio(med, a, b) for a, b in RATIOS},
        "ratios_of_mins": {f"{a}/{b}": ratio(low, a, b) for a, b in RATIOS},
    }
    print(
        f"n={n} batch={batch}: {reps} rounds ({len(quiet_rounds)} quiet) in {case['wall_s']:.1f} s; "
        + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in med.items())
        + "; rel. error "
        + ", ".join(f"{k} {v:.3f}" for k, v in errors.items()),
        flush=True,
    )
    return case


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(args.out.read_text())["edges"]))
        return 0
    threading = configure_threads(args.threads, args.omp_wait_policy)

    import torch

    torch.set_grad_enabled(False)  # torch.no_grad() for the whole run: inference only
    info = machine_info(threading)
    print(
        f"crossbar tile-engine benchmark: threads={args.threads}, sizes={args.sizes}, batches={args.batches}, "
        f"torch {info['torch']}, numpy {info['numpy']}, numba {info['numba']}, aihwkit {info['aihwkit']}",
        flush=True,
    )
    names = ["numpy", "torch_linear", "tile_products", "sim", "sim_cell"] + ([] if args.no_aihwkit else ["aihwkit"])
    cases: list[dict[str, Any]] = []
    builds: dict[str, dict[str, float]] = {}
    profiles: list[dict[str, Any]] = []
    started = time.perf_counter()
    quiet = Quiet(LoadMonitor(), args.quiet_wait, args.quiet_budget)
    for n in [] if args.edges_only else args.sizes:
        size_cases, build_s, profile = run_size(n, args, quiet)
        cases += size_cases
        builds[str(n)] = build_s
        if profile is not None:
            profiles.append(profile)

    if cases:
        print_table(cases, names)
    verdicts = evaluate_targets(cases)
    print_targets(verdicts)
    edges = None
    if not args.no_edges:
        timing = SimpleNamespace(
            Contender=Contender, run_rounds=run_rounds, QUIET=quiet, QUIET_CORES=QUIET_CORES, paired_ratio=paired_ratio
        )
        edges = run_edges(args, timing)
    info["thread_pools"] = thread_pools()
    with contextlib.suppress(OSError):
        info["loadavg_end"] = os.getloadavg()
    import numba

    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:
        info["numba_threading_layer"] = None
    data = {
        "benchmark": "tile_engine",
        "description": "steady-state forward of nn.Linear(n, n) on 256x256 tiles, 8-bit DAC/ADC, PCM device "
        "(drift to 1 h, drift compensation), output noise 0.04; times in seconds per call",
        "machine": info,
        "settings": {
            "quick": args.quick,
            "sizes": args.sizes,
            "batches": args.batches,
            "tile": TILE,
            "bits": BITS,
            "case_budget_s": args.case_budget,
            "min_reps": args.min_reps,
            "max_reps": args.max_reps,
            "settle_s": args.settle,
            "primer_limit_s": PRIMER_LIMIT_S,
            "min_sample_s": MIN_SAMPLE_S,
            "omp_wait_policy": args.omp_wait_policy,
            "quiet_wait_s": args.quiet_wait,
            "quiet_budget_s": args.quiet_budget,
            "quiet_threshold_cores": QUIET_CORES,
            "quiet_waited_s": quiet.waited_s,
            "ratio_method": "median over the rounds used of the ratio of the two contenders' samples in one round; "
            "rounds used: those in which other processes used < quiet_threshold_cores, when there are >= 2",
            "contenders": names,
            "keep_wires": args.keep_wires,
            "sim_chip": benchmark_chip(args.keep_wires, cell=False).to_dict(),
            "sim_cell_chip": benchmark_chip(args.keep_wires, cell=True).to_dict(),
            "aihwkit_config": "TorchInferenceRPUConfig: 256x256 tiles, omega 1.0 columnwise, inp/out_res 1/254, "
            "inp_bound 1, out_bound 12, out_noise 0.04, ABS_MAX, bound management NONE, "
            "PCMLikeNoiseModel(g_max=25), GlobalDriftCompensation, drift_analog_weights(3600)",
            "numpy_op": "x (B, n) float32 @ W.T (no bias)",
        },
        "programming_s": builds,
        "cases": cases,
        "targets": verdicts,
        "all_targets_pass": all(v["status"] == "PASS" for v in verdicts),
        "edges": edges,
        "all_edge_targets_pass": None if edges is None else all(v["status"] == "PASS" for v in edges["targets"]),
        "profile": profiles,
        "total_wall_s": time.perf_counter() - started,
    }
    write_json_atomic(args.out, data)
    print(f"\nwrote {args.out} ({data['total_wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
