"""Train a shipped model on sequential digits and write its checkpoint atomically.

    python -m models.train_digits --model s4d        (also s4-ptd, dss, s5, s5-ptd; --all for every one)

Seeded (model init, batch order); AdamW (weight decay 0.01, batch 64) with a cosine learning-rate schedule,
epochs and peak rate from ``models.ssm_digits.MODELS``; one CPU thread by default (1-3 minutes per model).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from crossbar.fileio import write_torch_file
from models.data import sequential_digits
from models.demo import accuracy
from models.ssm_digits import MODELS, build, checkpoint_path


def train(name: str, epochs: int | None = None, seed: int = 0, lr: float | None = None, batch: int = 64) -> nn.Module:
    """Train model ``name`` from seed ``seed`` (epochs and learning rate: the model's config unless given)."""
    x_train, y_train, _, _ = sequential_digits()
    model = build(name, seed)
    epochs = MODELS[name].epochs if epochs is None else epochs
    lr = MODELS[name].lr if lr is None else lr
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * ((len(x_train) + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x_train), generator=generator).split(batch):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            optimiser.step()
            schedule.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(MODELS), action="append")
    parser.add_argument("--all", action="store_true", help="train every shipped model, one after the other")
    parser.add_argument("--epochs", type=int, help="default: the model's config (20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    names = list(MODELS) if args.all else (args.model or parser.error("give --model NAME or --all"))
    torch.set_num_threads(args.threads)
    _, _, x_test, y_test = sequential_digits()
    for name in names:
        start = time.perf_counter()
        model = train(name, args.epochs, args.seed)
        write_torch_file(model.state_dict(), checkpoint_path(name))
        seconds = time.perf_counter() - start
        held_out = accuracy(model, x_test, y_test)
        print(f"{name}: held-out accuracy {held_out:.2%} ({seconds:.0f} s) -> {checkpoint_path(name)}")


if __name__ == "__main__":
    main()
