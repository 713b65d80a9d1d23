"""The ``crossbar`` command line: ``crossbar demo``, ``crossbar map MODEL.pt`` and ``crossbar sweep SPEC``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

import crossbar
from crossbar import demo
from crossbar.config import ChipConfig, ConfigError

if TYPE_CHECKING:
    from crossbar.sweep import SweepRun, SweepSpec


def _load_module(path: str) -> nn.Module:
    """A whole torch module saved with ``torch.save(model, path)`` (trusted file: it is unpickled)."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        obj = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 (any unpickling failure is a bad file for the user)
        raise ConfigError(f"{path}: not a torch file that can be loaded ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, nn.Module):
        raise ConfigError(
            f"{path}: holds a {type(obj).__name__}, not a torch module; save the whole model with "
            "torch.save(model, path) (a state_dict alone has no architecture)"
        )
    return obj


def cmd_map(args: argparse.Namespace) -> None:
    model = _load_module(args.model)
    chip = ChipConfig.load(args.chip)
    # The mapping depends only on the tile grid: skip the device physics and IR drop it does not need.
    chip = chip.replace(device={"model": "none"}, wires={"r_wl": 0.0, "r_bl": 0.0})
    mapping = crossbar.report(crossbar.compile(model, chip))
    print(json.dumps(mapping.to_dict(), indent=2) if args.json else mapping)


def cmd_demo(args: argparse.Namespace) -> None:
    chip = ChipConfig.load(args.chip)
    result, mapping = demo.run(chip, instances=args.instances)
    print(mapping)
    print()
    print(demo.format_result(result, chip.name))


def cmd_sweep(args: argparse.Namespace) -> int:
    from crossbar import sweep
    from crossbar.sweep.plot import plot_summary
    from crossbar.sweep.runner import plan_sweep
    from crossbar.sweep.summary import coordinate_columns

    if args.scheduler and args.workers is not None:
        raise ConfigError("--workers applies to the local cluster; with --scheduler the cluster decides")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be 0 (serial, in this process) or more (got {args.workers})")
    spec = sweep.load_spec(args.spec)
    results = Path(args.output) if args.output else Path(args.spec).with_suffix(".parquet")
    plan = plan_sweep(spec, results)  # every error in the spec or the results file surfaces here, before work
    try:
        run = _run_sweep(args, spec, results, serial=args.workers == 0 or not plan.todo)
    except KeyboardInterrupt:
        written = len(sweep.ResultsStore(results).keys() & {p.key for p in plan.points})
        print(f"interrupted: {written} of {len(plan.points)} points are in {results}; rerun to resume", file=sys.stderr)
        return 130
    table = sweep.summarize(sweep.ResultsStore(results).frame(), run.points)
    print(sweep.format_summary(table))
    print(
        f"\n{len(run.points)} points: {run.skipped} already in {results}, {run.computed} computed, "
        f"{len(run.failures)} failed"
    )
    if args.plot:
        plot_summary(table, coordinate_columns(run.points), args.plot, x=args.x, logx=args.logx)
        print(f"plot: {args.plot}")
    for coordinates, error in run.failures[:5]:
        print(f"failed {coordinates}: {error}", file=sys.stderr)
    return 1 if run.failures else 0


def _run_sweep(args: argparse.Namespace, spec: SweepSpec, results: Path, serial: bool) -> SweepRun:
    """Run ``spec`` in this process, on ``--scheduler`` or on a LocalCluster of ``--workers``: a SweepRun."""
    from distributed import Client

    from crossbar import sweep
    from crossbar.sweep.runner import available_cores

    progress = not args.no_progress
    if serial:
        return sweep.run_sweep(spec, results, None, progress)
    if args.scheduler:
        # An address, or a scheduler file as `dask scheduler --scheduler-file` writes it.
        where = {"scheduler_file": args.scheduler} if args.scheduler.endswith(".json") else {"address": args.scheduler}
        try:
            client = Client(**where, timeout=args.connect_timeout)
        except OSError as exc:
            raise ConfigError(f"--scheduler {args.scheduler}: cannot connect ({exc})") from exc
        with client:
            return sweep.run_sweep(spec, results, client, progress)
    with sweep.local_cluster(args.workers or available_cores()) as cluster, Client(cluster) as client:
        return sweep.run_sweep(spec, results, client, progress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossbar", description="Analog compute-in-memory simulator")
    commands = parser.add_subparsers(dest="command", required=True)
    map_cmd = commands.add_parser("map", help="mapping report of a saved torch module")
    map_cmd.add_argument("model", help="a file written by torch.save(model, path)")
    map_cmd.add_argument("--chip", default="default", help="preset name or chip JSON file (default: default)")
    map_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    map_cmd.set_defaults(run=cmd_map)
    demo_cmd = commands.add_parser("demo", help="the built-in digits MLP, float vs on the chip")
    demo_cmd.add_argument("--chip", default="default", help="preset name or chip JSON file (default: default)")
    demo_cmd.add_argument("--instances", type=int, default=5, help="chip instances to average over")
    demo_cmd.set_defaults(run=cmd_demo)
    sweep_cmd = commands.add_parser("sweep", help="Monte-Carlo sweep of a YAML/JSON spec on dask (docs/sweeps.md)")
    sweep_cmd.add_argument("spec", help="sweep spec, .yaml/.yml or .json")
    sweep_cmd.add_argument("-o", "--output", help="results Parquet file (default: the spec path with .parquet)")
    sweep_cmd.add_argument(
        "--scheduler",
        help="a running dask scheduler: address (tcp://host:8786) or scheduler file (.json); default: a local cluster",
    )
    sweep_cmd.add_argument("--connect-timeout", type=float, default=30.0, help="seconds to reach --scheduler")
    sweep_cmd.add_argument(
        "--workers", type=int, help="local worker processes (default: the cores; 0: serial in this process)"
    )
    sweep_cmd.add_argument("--plot", help="write a PNG: metric vs a parameter, 95%% confidence band over seeds")
    sweep_cmd.add_argument("--x", help="the coordinate on the plot's x axis (default: the first swept parameter)")
    sweep_cmd.add_argument("--logx", action="store_true", help="logarithmic x axis")
    sweep_cmd.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep_cmd.set_defaults(run=cmd_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
    except (ConfigError, ValueError, TypeError) as exc:
        print(f"crossbar {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
