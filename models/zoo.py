"""Built-in models and held-out data by name, for ``crossbar sensitivity`` and ``benchmarks/hpd_study.py``.

    model = zoo.load_model("gated-conv-lm")
    inputs, targets = zoo.held_out("tiny-shakespeare", tokens=8192)
    loss = zoo.cross_entropy(inputs, targets)   # loss(model) -> mean cross-entropy (nats)

To add a model, add one entry to ``MODELS``: name -> (loader, the name of its held-out data).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from crossbar.config import ConfigError
from crossbar.fileio import read_torch_file
from models.pretrained import SHIPPED as SHIPPED_LMS


def _digits_mlp() -> nn.Module:
    from models.demo import load_model

    return load_model()


def _gated_conv_lm() -> nn.Module:
    from models.gated_conv import load_model

    return load_model()


def _char_lm(name: str) -> Callable[[], nn.Module]:
    def load() -> nn.Module:
        from models.pretrained import load

        return load(name)

    return load


def _pretrained_lm(name: str) -> Callable[[], nn.Module]:
    def load() -> nn.Module:
        from models.llm import load

        return load(name)

    return load


def _digits_ssm(name: str) -> Callable[[], nn.Module]:
    def load() -> nn.Module:
        from models.ssm_digits import load

        return load(name)

    return load


# name -> (loader, held-out data name)
MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "digits-mlp": (_digits_mlp, "digits"),
    "gated-conv-lm": (_gated_conv_lm, "tiny-shakespeare"),
    **{name: (_digits_ssm(name), "sequential-digits") for name in ("s4d", "s4-ptd", "dss", "s5", "s5-ptd")},
    **{name: (_char_lm(name), "tiny-shakespeare") for name in SHIPPED_LMS},
    # a pretrained LM from an optional package (the llm extra; models/llm.py): loaded, not shipped
    "smollm2-135m": (_pretrained_lm("smollm2-135m"), "wikitext-2"),
}
DATASETS = ("digits", "sequential-digits", "tiny-shakespeare", "wikitext-2")


def load_model(name: str) -> nn.Module:
    """A built-in model by name, in eval mode."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}: built-in models are {', '.join(MODELS)}, or give a .pt file")
    return MODELS[name][0]().eval()


def default_data(name: str) -> str:
    """The held-out data of a built-in model."""
    return MODELS[name][1]


def held_out(name: str, tokens: int = 8192, length: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out (inputs, targets): a dataset name or a file of ``torch.save({"inputs": x, "targets": y})``.

    ``"digits"``: the demo's 30 % test split, x (540, 64) float, y (540,) int64; ``"sequential-digits"``: the
    same read pixel by pixel, x (540, 64, 1). ``"tiny-shakespeare"``: the
    first ``tokens // length`` consecutive windows of ``length`` characters of the held-out text, x and y
    (windows, length) int64, y the next characters (deterministic: no sampling). ``"wikitext-2"``: the same
    windows of WikiText-2 test tokens, cut by SmolLM2's tokenizer (the llm extra).
    """
    if name == "digits":
        from models.data import digits_split

        _, _, x, y = digits_split()
        return x, y.long()
    if name == "sequential-digits":
        from models.data import sequential_digits

        _, _, x, y = sequential_digits()
        return x, y
    if name == "tiny-shakespeare":
        from models.data import tiny_shakespeare

        return _windows(tiny_shakespeare().valid, tokens, length)
    if name == "wikitext-2":
        from models.llm import load_tokenizer
        from models.llm_eval import wikitext2_ids

        return _windows(wikitext2_ids(load_tokenizer("smollm2-135m"), tokens=tokens + 1), tokens, length)
    return _from_file(name)


def _windows(ids: torch.Tensor, tokens: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``tokens // length`` consecutive (input, next-token target) windows of ``length`` of ``ids``."""
    count = min(tokens // length, (len(ids) - 1) // length)
    if count < 1:
        raise ConfigError(f"held-out data: tokens ({tokens}) must be at least the window length ({length})")
    x = ids[: count * length].reshape(count, length)
    y = ids[1 : count * length + 1].reshape(count, length)
    return x, y


def _from_file(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not Path(path).is_file():
        raise ConfigError(f"data {path!r}: not a built-in dataset ({', '.join(DATASETS)}) nor a file")
    data = read_torch_file(path)
    if not (isinstance(data, dict) and isinstance(data.get("inputs"), torch.Tensor)):
        raise ConfigError(f'{path}: expected torch.save({{"inputs": tensor, "targets": tensor}}, path)')
    targets = data.get("targets")
    if not isinstance(targets, torch.Tensor) or len(targets) != len(data["inputs"]):
        raise ConfigError(f"{path}: 'targets' must be a tensor with one entry per input ({len(data['inputs'])})")
    return data["inputs"], targets.long()


def cross_entropy(inputs: torch.Tensor, targets: torch.Tensor, batch: int = 64) -> Callable[[nn.Module], float]:
    """``loss(model)``: mean cross-entropy (nats) of the model's logits (..., classes) against ``targets``
    (...), evaluated in batches of ``batch`` under no_grad."""

    def loss(model: nn.Module) -> float:
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(inputs), batch):
                logits = model(inputs[start : start + batch])
                target = targets[start : start + batch]
                if logits.shape[:-1] != target.shape:
                    raise ConfigError(
                        f"loss: model output {tuple(logits.shape)} does not match targets {tuple(target.shape)} "
                        "(expected logits (..., classes) for targets (...))"
                    )
                total += float(nn.functional.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="sum"))
                count += target.numel()
        return total / count

    return loss
