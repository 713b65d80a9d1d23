"""The ``crossbar`` command line: ``crossbar demo``, ``crossbar map MODEL.pt``, ``crossbar sensitivity MODEL``."""

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


def cmd_demo(args: argparse.Namespace) -> None:
    chip = ChipConfig.load(args.chip)
    result, mapping = demo.run(chip, instances=args.instances)
    print(mapping)
    print()
    print(demo.format_result(result, chip.name))


def cmd_sensitivity(args: argparse.Namespace) -> None:
    from crossbar import sensitivity
    from crossbar.weight_noise import WeightNoise
    from models import zoo

    builtin = args.model in zoo.MODELS
    if not builtin and not Path(args.model).is_file():
        raise ConfigError(f"{args.model}: neither a built-in model ({', '.join(zoo.MODELS)}) nor a file")
    model = zoo.load_model(args.model) if builtin else _load_module(args.model).eval()
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
    sens = commands.add_parser("sensitivity", help="rank layers or blocks by the loss increase noise on them causes")
    sens.add_argument("model", help="a built-in model (digits-mlp, gated-conv-lm) or a torch.save(model) file")
    sens.add_argument("--data", help="digits, tiny-shakespeare, or a .pt file of {'inputs', 'targets'}")
    sens.add_argument("--tokens", type=int, default=8192, help="held-out characters for text data")
    sens.add_argument("--noise", default="additive", choices=("additive", "multiplicative", "device"))
    sens.add_argument("--level", type=float, default=0.05, help="noise std (relative; additive/multiplicative)")
    sens.add_argument("--reference", default="tile", choices=("tile", "layer"), help="additive: max |w| of")
    sens.add_argument("--chip", default="default", help="chip (tile size; the device for --noise device)")
    sens.add_argument("--t-inference", type=float, help="--noise device: drift time in s (default: the chip's)")
    sens.add_argument("--by", default="layer", choices=("layer", "block"))
    sens.add_argument("--seeds", type=int, default=3, help="noise seeds 0..N-1 (mean and std)")
    sens.add_argument("--hpd", nargs="+", help="analyse with these layers split by HPD (e.g. blocks.-1.mixer.out_proj)")
    sens.add_argument("--budget", type=int, help="also print the digital placement for this many MACs per vector")
    sens.add_argument("--plot", help="write the ranking as a PNG")
    sens.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sens.set_defaults(run=cmd_sensitivity)
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
