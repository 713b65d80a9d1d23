"""Train a shipped Mamba / Mamba-2 character LM on tiny-shakespeare and write its checkpoint atomically.

    python -m models.train mamba-lm                      # -> models/checkpoints/mamba-lm.pt
    python -m models.train mamba2-lm --steps 200 --threads 2 --out /tmp/mamba2-lm.pt

Every random draw comes from ``--seed`` (initialisation, batches). AdamW with linear warmup and cosine decay,
weight decay on the weight matrices only, gradient clipping at 1. The checkpoint records bits per character on
the held-out tenth of the text against unigram and bigram baselines scored on the same characters
(models/lm_eval.py).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models import lm_eval
from models.data import lm_batches, tiny_shakespeare
from models.pretrained import SPECS, build, checkpoint_path

DEFAULTS = {"steps": 2000, "batch": 8, "lr": 4e-3, "context": 128}


def optimiser(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices (Linear, embedding) only, not on biases, norms, A_log, D, dt."""
    matrices = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.endswith("A_log")]
    others = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not n.endswith("A_log"))]
    groups = [{"params": matrices, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warmup over the first tenth of the steps, then cosine decay to a tenth of ``peak``."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(
    name: str,
    steps: int,
    batch: int,
    lr: float,
    context: int,
    seed: int,
    device: str = "cpu",
    eval_chars: int | None = None,
    log_every: int = 25,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the LM ``name``; returns (model on the CPU in eval mode, checkpoint dict).

    ``eval_chars`` limits the held-out characters scored at the end (default: all of them).
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    corpus = tiny_shakespeare()
    if len(corpus.vocabulary) != SPECS[name]["d_input"]:
        raise ValueError(f"the corpus has {len(corpus.vocabulary)} characters, SPECS[{name!r}] another vocabulary")
    model = build(name).to(device)
    opt = optimiser(model, lr, weight_decay=0.1)
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, lr)
        inputs, targets = lm_batches(corpus.train, context, batch, generator)
        loss = F.cross_entropy(model(inputs.to(device)).flatten(0, 1), targets.to(device).flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - start:7.1f} s", flush=True)
    seconds = time.perf_counter() - start
    model = model.cpu().eval()
    inputs, targets = lm_eval.windows(corpus.valid, context, eval_chars)
    vocabulary = len(corpus.vocabulary)
    metrics = {
        "train_seconds": seconds,
        "train_device": device,
        "valid_chars": targets.numel(),
        "bits_per_char": lm_eval.bits_per_char(model, inputs, targets),
        "unigram_bits_per_char": lm_eval.unigram_bits(corpus.train, targets, vocabulary),
        "bigram_bits_per_char": lm_eval.bigram_bits(corpus.train, inputs, targets, vocabulary),
    }
    settings = {"steps": steps, "batch": batch, "lr": lr, "context": context, "seed": seed, "device": device}
    checkpoint = {
        "name": name,
        "spec": SPECS[name],
        "state_dict": model.state_dict(),
        "vocabulary": corpus.vocabulary,
        "metrics": metrics,
        "training": settings,
    }
    return model, checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(SPECS), help="the model to train")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="optimiser steps (2000)")
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch"], help="sequences per step (8)")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak learning rate (4e-3)")
    parser.add_argument("--context", type=int, default=DEFAULTS["context"], help="window in characters (128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the machine is shared)")
    parser.add_argument("--out", type=Path, help="checkpoint path (default models/checkpoints/<name>.pt)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = {k: getattr(args, k) for k in DEFAULTS}
    if min(settings["steps"], settings["batch"], settings["context"]) < 1 or settings["lr"] <= 0:
        parser.error(f"steps, batch, context and lr must be positive (got {settings})")
    if args.device.startswith("cuda"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    _, checkpoint = train(args.name, seed=args.seed, device=args.device, **settings)
    out = args.out or checkpoint_path(args.name)
    from crossbar.fileio import write_torch_file

    out.parent.mkdir(parents=True, exist_ok=True)
    size = write_torch_file(checkpoint, out)
    print(f"{args.name}: {checkpoint['metrics']}\nwrote {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
