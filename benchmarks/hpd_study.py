"""The HPD study: perplexity of a char-LM under weight noise, plain mapping vs HPD vs other digital placements.

    python benchmarks/hpd_study.py --model gated-conv-lm             # the stand-in LM (a few minutes)
    python benchmarks/hpd_study.py --model mamba                     # the Mamba char-LM, once in models.zoo
    python benchmarks/hpd_study.py --model lm.pt --data tiny-shakespeare   # any torch.save(model) LM

Parts (all seeded; every setting is in the JSON written to ``--out``):

1. sensitivity: additive noise (tile reference) on one layer, then one block, at a time; loss increase on the
   first half of the held-out windows, over ``--sensitivity-seeds`` (disjoint from the evaluation seeds);
2. placements, each with its digital MACs per token counted from the layer shapes:
   ``plain`` (every layer analog), ``hpd`` (the paper's: U*S analog, V^T digital, on ``--layer``),
   ``hpd_svt`` (S*V^T analog, U digital), ``layer_digital`` (the whole layer digital), ``auto`` (the
   sensitivity ranking's choice for the budget of ``hpd``) and ``random`` (random layers in the same budget,
   one draw per evaluation seed);
3. perplexity of each placement on the second half of the held-out windows under additive (tile reference)
   and multiplicative noise at ``--levels``, and under the full device profile of ``--chip`` (programming
   error, drift to each of ``--times``, read noise, DAC/ADC) through ``crossbar.compile``; mean and std over
   ``--seeds`` noise seeds / chip instances;
4. hardware-in-the-loop fine-tuning (device profile at the first of ``--times``): ``--hil-steps`` Adam steps
   through the compiled model of chip instance 0 (gradients straight through to the float weights), plain
   and with HPD; evaluated on that chip instance and on fresh instances.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

from common import configure_threads, machine_info, write_json_atomic

RESULTS = Path(__file__).parent / "results"
FIGURE = Path(__file__).parent.parent / "docs" / "figures" / "hpd_study.png"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gated-conv-lm", help="built-in name (models.zoo) or torch.save file")
    parser.add_argument("--data", default=None, help="held-out data (default: the built-in model's)")
    parser.add_argument("--layer", default="blocks.-1.mixer.out_proj", help="the layer HPD splits")
    parser.add_argument("--tokens", type=int, default=16384, help="held-out characters (half each: rank, evaluate)")
    parser.add_argument("--length", type=int, default=128, help="window length of the held-out text")
    parser.add_argument("--levels", default="0.02,0.05,0.1,0.2", help="additive / multiplicative noise stds")
    parser.add_argument("--sensitivity-level", type=float, default=0.1, help="additive noise std for the ranking")
    parser.add_argument("--chip", default="default", help="chip preset or JSON for the device-profile part")
    parser.add_argument("--times", default="3600,86400,31536000", help="drift times t_inference (s), device part")
    parser.add_argument("--seeds", type=int, default=5, help="evaluation noise seeds / chip instances 0..N-1")
    parser.add_argument("--sensitivity-seeds", type=int, default=3, help="ranking seeds 1000..1000+N-1")
    parser.add_argument("--hil-steps", type=int, default=60, help="hardware-in-the-loop steps (0: skip)")
    parser.add_argument("--hil-lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "hpd_study.json")
    parser.add_argument("--figure", type=Path, default=FIGURE, help="perplexity-vs-noise plot (PNG)")
    parser.add_argument("--render", type=Path, help="only redraw the figure and print the tables of this JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        result = json.loads(args.render.read_text())
        _figure(result, args.figure)
        print(_table(result))
        return 0
    threading = configure_threads(args.threads, "passive")
    import numpy as np

    import crossbar
    from crossbar import hpd, sensitivity
    from crossbar.fileio import read_torch_module
    from crossbar.weight_noise import WeightNoise, analog_layers, noisy_copy
    from models import zoo

    start = time.perf_counter()
    builtin = args.model in zoo.MODELS
    model = zoo.load_model(args.model) if builtin else read_torch_module(args.model).eval()
    data = args.data or (zoo.default_data(args.model) if builtin else "tiny-shakespeare")
    inputs, targets = zoo.held_out(data, tokens=args.tokens, length=args.length)
    half = len(inputs) // 2
    rank_loss = zoo.cross_entropy(inputs[:half], targets[:half])
    eval_loss = zoo.cross_entropy(inputs[half:], targets[half:])
    chip = crossbar.ChipConfig.load(args.chip)
    tile = (chip.tile.rows, chip.tile.cols)
    layer = hpd.resolve_name(model, args.layer)
    levels = [float(v) for v in args.levels.split(",")]
    times = [float(v) for v in args.times.split(",")]
    seeds = list(range(args.seeds))
    float_loss = eval_loss(model)
    print(f"{args.model}: float perplexity {math.exp(float_loss):.3f} on {inputs[half:].numel()} held-out tokens")

    # 1. sensitivity, by layer and by block
    rank_noise = WeightNoise("additive", args.sensitivity_level, "tile", tile)
    rank_seeds = range(1000, 1000 + args.sensitivity_seeds)
    by_layer = sensitivity.analyse(model, rank_loss, rank_noise, rank_seeds, "layer")
    by_block = sensitivity.analyse(model, rank_loss, rank_noise, rank_seeds, "block")
    print(by_layer, by_block, sep="\n\n")
    layer_order = [row.name for row in by_layer.rows]
    block_order = [row.name for row in by_block.rows]
    last_block = sensitivity.groups(model, "block")
    last_block = [name for name in last_block if name.startswith(layer.rsplit(".", 2)[0])]
    out_projs = [name for name in layer_order if name.endswith("out_proj")]

    # 2. placements: (digital layers, hpd spec) and their digital MACs per token
    macs = {name: sensitivity.layer_macs(model, name) for name in analog_layers(model)}
    target = model.get_submodule(layer)
    rank = min(target.weight.shape)
    budget = rank * target.in_features  # the paper's HPD: V^T (rank x in) digital
    placements = {
        "plain": ([], None),
        "hpd": ([], {layer: {"orientation": "us_analog"}}),
        "hpd_svt": ([], {layer: {"orientation": "svt_analog"}}),
        "layer_digital": ([layer], None),
        "auto": (sensitivity.place_digital(by_layer, budget), None),
    }
    digital_macs = {
        "plain": 0,
        "hpd": budget,
        "hpd_svt": target.out_features * rank,
        "layer_digital": macs[layer],
        "auto": sum(macs[n] for n in placements["auto"][0]),
    }
    total_macs = sum(macs.values())
    analog_macs = {name: total_macs - d for name, d in digital_macs.items()}
    analog_macs["hpd"] = total_macs - macs[layer] + target.out_features * rank  # U*S on tiles
    analog_macs["hpd_svt"] = total_macs - macs[layer] + rank * target.in_features  # S*V^T on tiles
    random_draws = [sensitivity.random_placement(by_layer, budget, np.random.default_rng(s)) for s in seeds]
    # energy per token of each placement on the chip (crossbar.estimate on a slice of the held-out text)
    probe = inputs[half : half + 4]
    tokens_per_probe = probe.numel()

    def energy_per_token(digital_layers: list[str], spec: dict | None) -> float:
        compiled = crossbar.compile(model, chip, seed=0, digital=digital_layers, hpd=spec)
        return crossbar.estimate(compiled, probe).energy * len(probe) / tokens_per_probe

    cost = {
        name: {
            "digital_layers": placements[name][0],
            "hpd": placements[name][1],
            "digital_macs_per_token": digital_macs[name],
            "analog_macs_per_token": analog_macs[name],
            "energy_j_per_token": energy_per_token(*placements[name]),
        }
        for name in placements
    }
    cost["random"] = {
        "digital_layers_per_seed": random_draws,
        "digital_macs_per_token_per_seed": [sum(macs[n] for n in d) for d in random_draws],
    }
    print(f"\nbudget {budget} digital MACs per token ({budget / total_macs:.1%} of {total_macs} mapped MACs)")
    for name, row in cost.items():
        print(f"  {name:<14} {row}")

    def models_for(seed: int):
        """Each placement's (digital layers, hpd spec) for one evaluation seed (random draws per seed)."""
        return {**placements, "random": (random_draws[seed], None)}

    # 3. perplexity vs noise
    def weight_noise_row(noise: WeightNoise) -> dict:
        losses = {name: [] for name in (*placements, "random")}
        for seed in seeds:
            for name, (digital, spec) in models_for(seed).items():
                work = copy.deepcopy(model)
                if spec is not None:
                    hpd.apply(work, spec)
                noisy_layers = [n for n in analog_layers(work) if n not in digital]
                losses[name].append(eval_loss(noisy_copy(work, noise, seed, noisy_layers)))
        return _summary(losses)

    def device_row(device_chip) -> dict:
        losses = {name: [] for name in (*placements, "random")}
        for seed in seeds:
            for name, (digital, spec) in models_for(seed).items():
                compiled = crossbar.compile(model, device_chip, seed=seed, digital=digital, hpd=spec)
                losses[name].append(eval_loss(compiled))
        return _summary(losses)

    sweeps = []
    for kind in ("additive", "multiplicative"):
        for level in levels:
            noise = WeightNoise(kind, level, "tile", tile)
            sweeps.append({"noise": noise.describe(), "perplexity": weight_noise_row(noise)})
            _print_row(sweeps[-1])
    for t in times:
        device_chip = chip.replace(device={"t_inference": t})
        sweeps.append(
            {"noise": WeightNoise("device", chip=device_chip).describe(), "perplexity": device_row(device_chip)}
        )
        _print_row(sweeps[-1])

    # 4. hardware-in-the-loop fine-tuning at the first drift time
    hil = None
    if args.hil_steps > 0:
        hil_chip = chip.replace(device={"t_inference": times[0]})
        hil = {
            name: _hil(model, hil_chip, spec, args, data, eval_loss, seeds)
            for name, spec in (("plain", None), ("hpd", placements["hpd"][1]))
        }
        for name, row in hil.items():
            print(f"HIL {name}: {row}")

    result = {
        "benchmark": "hpd_study",
        "argv": sys.argv[1:],
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "layer_resolved": layer,
            "chip": chip.name,
            "eval_tokens": int(inputs[half:].numel()),
            "rank_tokens": int(inputs[:half].numel()),
        },
        "float_perplexity": math.exp(float_loss),
        "sensitivity": {"by_layer": by_layer.to_dict(), "by_block": by_block.to_dict()},
        "paper_finding": {
            "layer_ranking": layer_order,
            "block_ranking": block_order,
            "rank_of_hpd_layer": layer_order.index(layer) + 1,
            "rank_of_last_block": block_order.index(last_block[0]) + 1 if last_block else None,
            "out_proj_ranks": {n: layer_order.index(n) + 1 for n in out_projs},
        },
        "budget_macs_per_token": budget,
        "mapped_macs_per_token": total_macs,
        "placements": cost,
        "sweeps": sweeps,
        "hil": hil,
        "seconds": time.perf_counter() - start,
        "machine": machine_info(threading),
    }
    write_json_atomic(args.out, result)
    _figure(result, args.figure)
    print(_table(result))
    print(f"wrote {args.out} and {args.figure} ({result['seconds']:.0f} s)")
    return 0


def _summary(losses: dict[str, list[float]]) -> dict:
    """Per placement: perplexity exp(loss) of each seed, its mean and std."""
    import numpy as np

    out = {}
    for name, values in losses.items():
        ppl = np.exp(np.array(values))
        out[name] = {"mean": float(ppl.mean()), "std": float(ppl.std()), "each": ppl.tolist()}
    return out


def _print_row(row: dict) -> None:
    cells = "  ".join(f"{k} {v['mean']:.3f}+-{v['std']:.3f}" for k, v in row["perplexity"].items())
    print(f"{row['noise']}: {cells}", flush=True)


def _noise_label(noise: dict) -> str:
    if noise["kind"] == "device":
        return f"device {noise['chip']}, t = {noise['device']['t_inference']:.0f} s"
    return f"{noise['kind']} {noise['level']}"


def _table(result: dict) -> str:
    """Markdown: perplexity mean +- std per noise setting (rows) and placement (columns), then paired
    differences."""
    import numpy as np

    names = list(result["sweeps"][0]["perplexity"])
    lines = ["| noise | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in result["sweeps"]:
        cells = [f"{row['perplexity'][n]['mean']:.3f} ± {row['perplexity'][n]['std']:.3f}" for n in names]
        lines.append(f"| {_noise_label(row['noise'])} | " + " | ".join(cells) + " |")
    lines += ["", "Paired per seed (same noise draw / chip instance), mean ± std of the perplexity difference:", ""]
    pairs = [("hpd", "plain"), ("hpd_svt", "plain"), ("layer_digital", "plain"), ("auto", "random")]
    lines += ["| noise | " + " | ".join(f"{a} − {b}" for a, b in pairs) + " |", "|---" * (len(pairs) + 1) + "|"]
    for row in result["sweeps"]:
        ppl = row["perplexity"]
        diffs = [np.subtract(ppl[a]["each"], ppl[b]["each"]) for a, b in pairs]
        cells = [f"{d.mean():+.3f} ± {d.std():.3f}" for d in diffs]
        lines.append(f"| {_noise_label(row['noise'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure(result: dict, path: Path) -> None:
    """Perplexity vs noise level (additive, multiplicative) and vs drift time (device), per placement; the
    layer ranking beside it (``*_sensitivity.png``)."""

    from crossbar.sensitivity import Sensitivity

    ranking = Sensitivity.from_dict(result["sensitivity"]["by_layer"])
    ranking.plot(path.with_name(path.stem + "_sensitivity.png"))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossbar.fileio import write_figure_atomic

    kinds = ("additive", "multiplicative", "device")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, kind in zip(axes, kinds, strict=True):
        rows = [r for r in result["sweeps"] if r["noise"]["kind"] == kind]
        if not rows:
            continue
        xs = [r["noise"]["device"]["t_inference"] if kind == "device" else r["noise"]["level"] for r in rows]
        for name in rows[0]["perplexity"]:
            mean = [r["perplexity"][name]["mean"] for r in rows]
            std = [r["perplexity"][name]["std"] for r in rows]
            ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=name)
        ax.axhline(result["float_perplexity"], color="k", ls=":", lw=1, label="float")
        ax.set_xscale("log")
        if kind != "device":
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
        if kind == "additive":
            ax.set_yscale("log")
        ax.set_xlabel("drift time t_inference (s)" if kind == "device" else f"{kind} noise std (relative)")
        ax.set_ylabel("held-out perplexity")
        ax.set_title(kind if kind != "additive" else "additive (tile max reference)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{result['settings']['model']}: HPD on {result['settings']['layer_resolved']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_figure_atomic(fig, path, dpi=110)
    plt.close(fig)


def _hil(model, chip, spec, args, data, eval_loss, seeds) -> dict:  # noqa: ANN001 (internal)
    """Fine-tune through chip instance 0 (``spec``: HPD or None), then evaluate on instance 0 and others."""
    import numpy as np
    import torch

    import crossbar
    from models.data import lm_batches, tiny_shakespeare

    if data != "tiny-shakespeare":
        raise ValueError("hardware-in-the-loop fine-tuning trains on tiny-shakespeare; pass --hil-steps 0")
    compiled = crossbar.compile(model, chip, seed=0, hpd=spec)
    before = eval_loss(compiled)
    train_ids = tiny_shakespeare().train
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(compiled.parameters(), lr=args.hil_lr)
    compiled.train()
    for _ in range(args.hil_steps):
        x, y = lm_batches(train_ids, 64, 16, generator)
        loss = torch.nn.functional.cross_entropy(compiled(x).flatten(0, 1), y.flatten())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    compiled.eval()
    same = eval_loss(compiled)
    tuned = _float_copy(model, compiled, spec)
    fresh = [s + 100 for s in seeds]  # chip instances the fine-tuning never saw
    untuned = [eval_loss(crossbar.compile(model, chip, seed=s, hpd=spec)) for s in fresh]
    others = [eval_loss(crossbar.compile(tuned, chip, seed=s, hpd=spec)) for s in fresh]
    return {
        "float_after": math.exp(eval_loss(tuned)),  # the tuned weights without noise: training alone
        "chip0_before": math.exp(before),
        "chip0_after": math.exp(same),
        "fresh_chips_before": {"mean": float(np.exp(untuned).mean()), "std": float(np.exp(untuned).std())},
        "fresh_chips_after": {"mean": float(np.exp(others).mean()), "std": float(np.exp(others).std())},
        "fresh_chip_seeds": fresh,
        "steps": args.hil_steps,
        "lr": args.hil_lr,
        "batch": "16 windows x 64 characters",
    }


def _float_copy(model, compiled, spec):  # noqa: ANN001, ANN202 (internal)
    """The float model with the fine-tuned weights of ``compiled`` (the HPD layer stays un-split: the
    fine-tuned factors multiply back into one weight, and compile(hpd=...) splits it again)."""
    import torch

    from crossbar import TiledLinear

    tuned = copy.deepcopy(model)
    state = {}
    for name, module in compiled.named_modules():
        if isinstance(module, TiledLinear):
            state[f"{name}.weight"] = module.weight.detach()
            if module.bias is not None:
                state[f"{name}.bias"] = module.bias.detach()
    for layer in spec or {}:
        base = layer
        inner, outer = state.pop(f"{base}.inner.weight"), state.pop(f"{base}.outer.weight")
        state[f"{base}.weight"] = outer @ inner
        if f"{base}.outer.bias" in state:
            state[f"{base}.bias"] = state.pop(f"{base}.outer.bias")
    with torch.no_grad():
        for name, value in state.items():
            tuned.get_parameter(name).copy_(value)
    return tuned


if __name__ == "__main__":
    sys.exit(main())
