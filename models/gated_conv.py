"""A small gated-convolution character LM: the stand-in for the Mamba char-LM in the HPD study.

Its mixer has Mamba's block shape with the selective scan replaced by a causal depthwise convolution:

    x, z = in_proj(u).chunk(2)              # (B, L, d_inner) each, d_inner = expand * d_model
    x = silu(causal_depthwise_conv(x))      # kernel ``kernel`` over time
    y = out_proj(x * silu(z))               # (B, L, d_model)

so it has the layers the HPD paper names (``blocks.N.mixer.in_proj`` / ``out_proj``) on the shared backbone.
The checkpoint ``models/checkpoints/gated_conv_lm.pt`` (state dict, about 0.5 MB) is trained on
tiny-shakespeare by ``python -m models.gated_conv --train`` (seeded; a few minutes on two cores).
"""

from __future__ import annotations

import argparse
import io
import time
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from crossbar.fileio import write_torch_file
from models.backbone import SequenceModel
from models.data import lm_batches, tiny_shakespeare

CHECKPOINT = "gated_conv_lm.pt"
VOCABULARY = 65  # tiny-shakespeare's characters
D_MODEL, N_LAYERS, EXPAND, KERNEL = 64, 4, 2, 8


class GatedConvMixer(nn.Module):
    """(B, L, d_model) -> (B, L, d_model), causal: output t sees inputs t-kernel+1 .. t."""

    def __init__(self, d_model: int, expand: int = EXPAND, kernel: int = KERNEL) -> None:
        super().__init__()
        d_inner = expand * d_model
        self.in_proj = nn.Linear(d_model, 2 * d_inner)
        self.conv = nn.Conv1d(d_inner, d_inner, kernel, groups=d_inner, padding=kernel - 1)
        self.out_proj = nn.Linear(d_inner, d_model)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = self.conv(x.transpose(1, 2))[..., : u.shape[1]].transpose(1, 2)
        return self.out_proj(nn.functional.silu(x) * nn.functional.silu(z))


def gated_conv_lm() -> SequenceModel:
    """The untrained stand-in LM: 65 characters, d_model 64, 4 blocks."""
    return SequenceModel(VOCABULARY, D_MODEL, N_LAYERS, VOCABULARY, GatedConvMixer, task="lm")


def load_model() -> SequenceModel:
    """The shipped, trained stand-in LM in eval mode."""
    model = gated_conv_lm()
    data = resources.files("models.checkpoints").joinpath(CHECKPOINT).read_bytes()
    model.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
    return model.eval()


def train(steps: int = 1500, length: int = 64, batch: int = 32, seed: int = 0) -> SequenceModel:
    """AdamW (lr 3e-3, cosine to 0) on random windows of the training text; seeded."""
    torch.manual_seed(seed)
    corpus = tiny_shakespeare()
    model = gated_conv_lm()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x, y = lm_batches(corpus.train, length, batch, generator)
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 500 == 0:
            print(f"step {step}: train loss {loss.item():.3f}", flush=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", action="store_true", help="train and write the shipped checkpoint")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    if args.train:
        start = time.perf_counter()
        model = train(args.steps)
        path = Path(__file__).parent / "checkpoints" / CHECKPOINT
        write_torch_file(model.state_dict(), path)
        print(f"wrote {path} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
