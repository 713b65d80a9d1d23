"""The ``crossbar`` command line: ``demo``, ``map MODEL.pt``, ``estimate MODEL.pt`` (energy and latency),
``convert`` (lab data to HDF5 measurements), ``calibrate`` (measurements to a device profile), ``sweep SPEC``
(Monte-Carlo grids on dask) and ``sensitivity MODEL`` (which layers noise hurts most)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import crossbar
from crossbar import progress
from crossbar.config import ChipConfig, ConfigError
from crossbar.fileio import read_torch_file, read_torch_module

if TYPE_CHECKING:
    from crossbar.sweep import SweepRun, SweepSpec


def cmd_map(args: argparse.Namespace) -> None:
    model = read_torch_module(args.model)
    chip = ChipConfig.load(args.chip)
    # The mapping depends only on the tile grid: skip the device physics and IR drop it does not need.
    chip = chip.replace(device={"model": "none"}, wires={"r_wl": 0.0, "r_bl": 0.0})
    mapping = crossbar.report(crossbar.compile(model, chip))
    print(json.dumps(mapping.to_dict(), indent=2) if args.json else mapping)


def _example_inputs(args: argparse.Namespace) -> torch.Tensor | tuple:
    """``--inputs FILE.pt`` (a tensor or a tuple of tensors) or ``--input-shape 1,64`` (uniform in [-1, 1],
    seeded by ``--seed``)."""
    if (args.inputs is None) == (args.input_shape is None):
        raise ConfigError("give example inputs: --input-shape B,D,... or --inputs FILE.pt (one of them)")
    if args.inputs is not None:
        inputs = read_torch_file(args.inputs)
        if isinstance(inputs, list):
            inputs = tuple(inputs)
        if not isinstance(inputs, torch.Tensor | tuple):
            raise ConfigError(f"{args.inputs}: holds a {type(inputs).__name__}; save a tensor or a tuple of tensors")
        return inputs
    try:
        shape = tuple(int(n) for n in args.input_shape.split(","))
    except ValueError as exc:
        raise ConfigError(f"--input-shape: comma-separated integers, e.g. 1,64 (got {args.input_shape!r})") from exc
    if not shape or min(shape) < 1:
        raise ConfigError(f"--input-shape: every dimension must be positive (got {args.input_shape!r})")
    generator = torch.Generator().manual_seed(args.seed)
    return torch.rand(shape, generator=generator) * 2 - 1


def cmd_estimate(args: argparse.Namespace) -> None:
    model = read_torch_module(args.model)
    chip = ChipConfig.load(args.chip)
    inputs = _example_inputs(args)
    constants = crossbar.EnergyConstants.load(args.constants)  # checked before the (slower) compile
    analog = crossbar.compile(model, chip, seed=args.seed)
    result = crossbar.estimate(analog, inputs, constants=constants)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result)
    if args.plot:
        result.plot(args.plot)


def cmd_demo(args: argparse.Namespace) -> None:
    from models import demo  # the command line alone faces models/ (the layering rule)

    chip = ChipConfig.load(args.chip)
    result, mapping = demo.run(chip, instances=args.instances)
    print(mapping)
    print()
    print(demo.format_result(result, chip.name))
    print()
    print(result.energy or "energy: not estimated (the chip has no DAC/ADC resolution to price)")


def cmd_convert(args: argparse.Namespace) -> None:
    from calibration import goodness, importers

    metadata = {
        "technology": args.technology,
        "g_max": args.g_max,
        "source": args.source,
        "licence": args.licence,
        "read_voltage": args.read_voltage,
        "temperature": args.temperature,
    }
    measurements = importers.convert(args.format, args.input, args.output, **metadata)
    print(f"wrote {args.output}: {goodness.format_measurements(measurements)}")


def cmd_calibrate(args: argparse.Namespace) -> None:
    from calibration import fitting, goodness

    result = fitting.fit_with_report(
        args.measurements, args.name, args.order, args.read_window, args.split_seed, args.spread_model
    )
    result.profile.save(args.output)
    print(goodness.format_fit(result))
    if args.floor and result.validation is not None:
        from calibration import read
        from calibration.noise_floor import noise_floor

        split_seed = result.profile.fitted_from["split_seed"]
        print(goodness.format_floor(result, noise_floor(read(args.measurements).relaxation, split_seed)))
    print(f"wrote {args.output}")
    if args.plot:
        goodness.plot_fit(result, args.plot)
        print(f"wrote {args.plot}")


def _calibration_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from calibration.importers import FORMATS

    convert = commands.add_parser(
        "convert", parents=[common], help="import lab measurements into the HDF5 measurement schema"
    )
    convert.add_argument("format", choices=sorted(FORMATS), help="input format (see docs/calibration.md)")
    convert.add_argument("input", help="the lab file, or for relaxation a technology folder (read only)")
    convert.add_argument("-o", "--output", required=True, help="HDF5 file to write (atomically)")
    convert.add_argument("--g-max", type=float, help="g_max in siemens (csv default: the largest target)")
    convert.add_argument("--technology", help="device technology name")
    convert.add_argument("--source", help="where the data come from")
    convert.add_argument("--licence", help="licence of the data")
    convert.add_argument("--read-voltage", type=float, help="read voltage, volts")
    convert.add_argument("--temperature", type=float, help="temperature, kelvin")
    convert.set_defaults(run=cmd_convert)
    calibrate = commands.add_parser(
        "calibrate", parents=[common], help="fit a device profile to an HDF5 measurement file"
    )
    calibrate.add_argument("measurements", help="HDF5 file (schema of docs/calibration.md; read only)")
    calibrate.add_argument("-o", "--output", required=True, help="profile JSON to write (atomically)")
    calibrate.add_argument("--plot", help="PNG of validation-half vs fitted spread and its error per level and time")
    calibrate.add_argument("--name", help="profile name (default: the file's stem)")
    calibrate.add_argument("--order", type=int, default=4, help="polynomial order of the fits (default 4)")
    calibrate.add_argument("--read-window", type=float, default=1.0, help="read-noise window, seconds (default 1)")
    calibrate.add_argument("--split-seed", type=int, default=0, help="seed of the fit / validation split (default 0)")
    calibrate.add_argument(
        "--spread-model",
        choices=("auto", "spline", "linear", "polynomial"),
        default="auto",
        help="form of the spread curves (default auto: chosen on the validation half)",
    )
    calibrate.add_argument(
        "--floor",
        action="store_true",
        help="also estimate the noise floor of the held-out error from the data (bootstrap, split-half; ~1 s)",
    )
    calibrate.set_defaults(run=cmd_calibrate)


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

    progress = False if args.no_progress else None  # None: on a terminal, unless --quiet
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


def cmd_sensitivity(args: argparse.Namespace) -> None:
    from crossbar import sensitivity
    from crossbar.weight_noise import WeightNoise
    from models import zoo

    builtin = args.model in zoo.MODELS
    if not builtin and not Path(args.model).is_file():
        raise ConfigError(f"{args.model}: neither a built-in model ({', '.join(zoo.MODELS)}) nor a file")
    model = zoo.load_model(args.model) if builtin else read_torch_module(args.model).eval()
    data = args.data or (zoo.default_data(args.model) if builtin else None)
    if data is None:
        raise ConfigError("a saved model needs --data (digits, tiny-shakespeare, or a .pt file of inputs/targets)")
    inputs, targets = zoo.held_out(data, tokens=args.tokens)
    chip = ChipConfig.load(args.chip)
    if args.t_inference is not None:
        chip = chip.replace(device={"t_inference": args.t_inference})
    noise = WeightNoise(args.noise, args.level, args.reference, (chip.tile.rows, chip.tile.cols), chip)
    result = sensitivity.analyse(
        model, zoo.cross_entropy(inputs, targets), noise, range(args.seeds), args.by, hpd=args.hpd
    )
    print(json.dumps(result.to_dict(), indent=2) if args.json else result)
    if args.budget is not None:
        chosen = sensitivity.place_digital(result, args.budget)
        print(f"digital placement for {args.budget} MACs per vector: {', '.join(chosen) or 'none'}")
    if args.plot:
        result.plot(args.plot)
        print(f"wrote {args.plot}")


QUIET_HELP = "no progress bars (they appear on standard error when it is a terminal)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossbar", description="Analog compute-in-memory simulator")
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    # --quiet also after the command (crossbar demo --quiet); SUPPRESS keeps the one before it when absent
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    map_cmd = commands.add_parser("map", parents=[common], help="mapping report of a saved torch module")
    map_cmd.add_argument("model", help="a file written by torch.save(model, path)")
    map_cmd.add_argument("--chip", default="default", help="preset name or chip JSON file (default: default)")
    map_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    map_cmd.set_defaults(run=cmd_map)
    est = commands.add_parser(
        "estimate", parents=[common], help="energy and latency per inference of a saved torch module on a chip"
    )
    est.add_argument("model", help="a file written by torch.save(model, path)")
    est.add_argument("--chip", default="default", help="preset name or chip JSON file (default: default)")
    est.add_argument("--input-shape", help="example inputs of this shape, uniform in [-1, 1], e.g. 1,64")
    est.add_argument("--inputs", help="example inputs: a file written by torch.save(tensor or tuple, path)")
    est.add_argument("--constants", help="JSON file overriding shared energy constants (docs/energy.md)")
    est.add_argument("--seed", type=int, default=0, help="chip instance and --input-shape draw (default: 0)")
    est.add_argument("--json", action="store_true", help="print JSON instead of a table")
    est.add_argument("--plot", help="write the energy breakdown figure here (.png, .pdf or .svg)")
    est.set_defaults(run=cmd_estimate)
    demo_cmd = commands.add_parser("demo", parents=[common], help="the built-in digits MLP, float vs on the chip")
    demo_cmd.add_argument("--chip", default="default", help="preset name or chip JSON file (default: default)")
    demo_cmd.add_argument("--instances", type=int, default=5, help="chip instances to average over")
    demo_cmd.set_defaults(run=cmd_demo)
    _calibration_parsers(commands, common)
    sweep_cmd = commands.add_parser(
        "sweep", parents=[common], help="Monte-Carlo sweep of a YAML/JSON spec on dask (docs/sweeps.md)"
    )
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
    sens = commands.add_parser(
        "sensitivity", parents=[common], help="rank layers or blocks by the loss increase noise on them causes"
    )
    sens.add_argument("model", help="a built-in model (digits-mlp, gated-conv-lm) or a torch.save(model) file")
    sens.add_argument("--data", help="digits, tiny-shakespeare, or a .pt file of {'inputs', 'targets'}")
    sens.add_argument("--tokens", type=int, default=8192, help="held-out characters for text data")
    sens.add_argument("--noise", default="additive", choices=("additive", "multiplicative", "device"))
    sens.add_argument("--level", type=float, default=0.05, help="noise std (relative; additive/multiplicative)")
    sens.add_argument("--reference", default="tile", choices=("tile", "layer"), help="additive: max |w| of")
    sens.add_argument("--chip", default="default", help="chip (tile size; the device for --noise device)")
    sens.add_argument("--t-inference", type=float, help="--noise device: drift time in s (default: the chip's)")
    sens.add_argument("--by", default="layer", choices=("layer", "block", "type"))
    sens.add_argument("--seeds", type=int, default=3, help="noise seeds 0..N-1 (mean and std)")
    sens.add_argument("--hpd", nargs="+", help="analyse with these layers split by HPD (e.g. blocks.-1.mixer.out_proj)")
    sens.add_argument("--budget", type=int, help="also print the digital placement for this many MACs per vector")
    sens.add_argument("--plot", help="write the ranking as a PNG")
    sens.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sens.set_defaults(run=cmd_sensitivity)
    return parser


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (``crossbar map ... | head``)."""
    if not hasattr(select, "poll"):
        return True  # cannot tell: a BrokenPipeError is then taken to be standard output's
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (redirected in this process), or closed
        return False
    poller = select.poll()
    poller.register(descriptor, select.POLLERR)
    return bool(poller.poll(0))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with progress.quiet() if args.quiet else contextlib.nullcontext():
            code = args.run(args)
        sys.stdout.flush()
    except (ConfigError, ValueError, TypeError, OSError) as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
            # The reader wants no more (| head): stop quietly, as Unix tools do, and let nothing more reach the
            # pipe (Python's flush of standard output at exit would otherwise report the broken pipe).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        print(f"crossbar {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
