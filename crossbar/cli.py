"""The ``crossbar`` command line: ``crossbar demo``, ``crossbar map MODEL.pt`` and ``crossbar estimate MODEL.pt``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

import crossbar
from crossbar import demo
from crossbar.config import ChipConfig, ConfigError


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


def _example_inputs(args: argparse.Namespace) -> torch.Tensor | tuple:
    """``--inputs FILE.pt`` (a tensor or a tuple of tensors) or ``--input-shape 1,64`` (uniform in [-1, 1],
    seeded by ``--seed``)."""
    if (args.inputs is None) == (args.input_shape is None):
        raise ConfigError("give example inputs: --input-shape B,D,... or --inputs FILE.pt (one of them)")
    if args.inputs is not None:
        if not Path(args.inputs).is_file():
            raise ConfigError(f"{args.inputs}: no such file")
        try:
            inputs = torch.load(args.inputs, weights_only=True, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 (any load failure is a bad file for the user)
            raise ConfigError(f"{args.inputs}: not a torch file of tensors ({type(exc).__name__}: {exc})") from exc
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
    model = _load_module(args.model)
    chip = ChipConfig.load(args.chip)
    inputs = _example_inputs(args)
    constants = crossbar.EnergyConstants.load(args.constants)  # checked before the (slower) compile
    analog = crossbar.compile(model, chip, seed=args.seed)
    result = crossbar.estimate(analog, inputs, constants=constants)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result)
    if args.plot:
        result.plot(args.plot)


def cmd_demo(args: argparse.Namespace) -> None:
    chip = ChipConfig.load(args.chip)
    result, mapping = demo.run(chip, instances=args.instances)
    print(mapping)
    print()
    print(demo.format_result(result, chip.name))
    print()
    print(result.energy or "energy: not estimated (the chip has no DAC/ADC resolution to price)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossbar", description="Analog compute-in-memory simulator")
    commands = parser.add_subparsers(dest="command", required=True)
    map_cmd = commands.add_parser("map", help="mapping report of a saved torch module")
    map_cmd.add_argument("model", help="a file written by torch.save(model, path)")
    map_cmd.add_argument("--chip", default="default", help="preset name or chip JSON file (default: default)")
    map_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    map_cmd.set_defaults(run=cmd_map)
    est = commands.add_parser("estimate", help="energy and latency per inference of a saved torch module on a chip")
    est.add_argument("model", help="a file written by torch.save(model, path)")
    est.add_argument("--chip", default="default", help="preset name or chip JSON file (default: default)")
    est.add_argument("--input-shape", help="example inputs of this shape, uniform in [-1, 1], e.g. 1,64")
    est.add_argument("--inputs", help="example inputs: a file written by torch.save(tensor or tuple, path)")
    est.add_argument("--constants", help="JSON file overriding shared energy constants (docs/energy.md)")
    est.add_argument("--seed", type=int, default=0, help="chip instance and --input-shape draw (default: 0)")
    est.add_argument("--json", action="store_true", help="print JSON instead of a table")
    est.add_argument("--plot", help="write the energy breakdown figure here (.png, .pdf or .svg)")
    est.set_defaults(run=cmd_estimate)
    demo_cmd = commands.add_parser("demo", help="the built-in digits MLP, float vs on the chip")
    demo_cmd.add_argument("--chip", default="default", help="preset name or chip JSON file (default: default)")
    demo_cmd.add_argument("--instances", type=int, default=5, help="chip instances to average over")
    demo_cmd.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ConfigError, ValueError, TypeError) as exc:
        print(f"crossbar {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
