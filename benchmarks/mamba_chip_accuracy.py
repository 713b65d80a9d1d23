#!/usr/bin/env python
"""Accuracy of the shipped char-LMs (models.pretrained.SHIPPED): float vs ideal tiles vs the default chip.

Bits per character on the first ``--chars`` held-out characters of tiny-shakespeare (windows of the training
context, models/lm_eval.py), with the unigram and bigram baselines on the same characters. Chip instances
are seeds 0 .. ``--instances`` - 1 of ``crossbar.compile(model, "default", seed)``.
Prints a Markdown table and writes JSON.

    python benchmarks/mamba_chip_accuracy.py [--instances 5] [--chars 8192] [--out benchmarks/results/mamba_chip.json]
"""

from __future__ import annotations

import argparse
import functools
import statistics
from pathlib import Path
from typing import Any

from common import configure_threads, machine_info, write_json_atomic

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "mamba_chip.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=5, help="chip instances (seeds 0..N-1)")
    parser.add_argument("--chars", type=int, default=8192, help="held-out characters scored (LMs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threading = configure_threads(args.threads, "default")

    import crossbar
    from models import lm_eval, pretrained
    from models.data import tiny_shakespeare

    corpus = tiny_shakespeare()
    results: dict[str, Any] = {"machine": machine_info(threading), "instances": args.instances, "models": {}}
    rows = []
    for name in pretrained.SHIPPED:
        checkpoint = pretrained.read_checkpoint(name)
        model = pretrained.load(name)
        inputs, targets = lm_eval.windows(corpus.valid, checkpoint["training"]["context"], args.chars)
        metric, unit = "bits_per_char", "bits/char (lower is better)"
        score = functools.partial(lm_eval.bits_per_char, inputs=inputs, targets=targets)
        baselines = {
            "unigram": lm_eval.unigram_bits(corpus.train, targets, len(corpus.vocabulary)),
            "bigram": lm_eval.bigram_bits(corpus.train, inputs, targets, len(corpus.vocabulary)),
            "scored_chars": targets.numel(),
        }
        chip = [score(crossbar.compile(model, "default", seed=s)) for s in range(args.instances)]
        entry = {
            "metric": metric,
            "unit": unit,
            "float": score(model),
            "ideal": score(crossbar.compile(model, "ideal")),
            "default_chip": chip,
            "default_mean": statistics.mean(chip),
            "default_std": statistics.stdev(chip) if len(chip) > 1 else 0.0,
            "baselines": baselines,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        results["models"][name] = entry
        rows.append(
            f"| {name} | {metric} | {entry['float']:.4f} | {entry['ideal']:.4f} | "
            f"{entry['default_mean']:.4f} ± {entry['default_std']:.4f} | {min(chip):.4f} .. {max(chip):.4f} | "
            + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in baselines.items())
            + " |"
        )
        print(rows[-1], flush=True)
    header = (
        "| model | metric | float | ideal tiles | default chip (mean ± std) | range | baselines |\n" + "|---" * 7 + "|"
    )
    print("\n" + header + "\n" + "\n".join(rows))
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
