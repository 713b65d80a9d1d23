"""Mamba and Mamba-2: scans vs the float64 recurrence, ideal chip = float, mapping, digital ops, checkpoints."""

import warnings

import pytest
import torch
from torch import nn

import crossbar
from crossbar.compiler import mapped_layers
from crossbar.layers import TiledLinear
from models import lm_eval, pretrained
from models.data import tiny_shakespeare
from models.mamba import Mamba
from models.mamba2 import Mamba2, ssd
from models.selective_scan import selective_scan
from models.train import train


def normalised_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    return float((y.double() - reference).abs().max() / reference.abs().max())


def s6_recurrence(x, dt, A, B, C):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t, y_t = C_t h_t, one step at a time (float64)."""
    h = torch.zeros(x.shape[0], *A.shape, dtype=torch.float64)
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1)


def ssd_recurrence(x, a, B, C):
    """H_t = exp(a_t) H_{t-1} + x_t B_t^T, y_t = H_t C_t per head (head h reads group h // (heads / groups))."""
    heads, groups = x.shape[2], B.shape[2]
    B, C = B.repeat_interleave(heads // groups, 2), C.repeat_interleave(heads // groups, 2)
    H = torch.zeros(x.shape[0], heads, x.shape[3], B.shape[3], dtype=torch.float64)
    ys = []
    for t in range(x.shape[1]):
        H = torch.exp(a[:, t, :, None, None]) * H + x[:, t, :, :, None] * B[:, t, :, None, :]
        ys.append((H @ C[:, t, :, :, None]).squeeze(-1))
    return torch.stack(ys, 1)


def s6_inputs(batch=2, length=41, d=6, n=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, length, d, generator=g, dtype=dtype)
    dt = torch.rand(batch, length, d, generator=g, dtype=dtype) * 0.8
    A = -torch.rand(d, n, generator=g, dtype=dtype) * 8
    B, C = (torch.randn(batch, length, n, generator=g, dtype=dtype) for _ in range(2))
    return x, dt, A, B, C


def test_selective_scan_matches_float64_recurrence_and_its_gradient():
    inputs = s6_inputs()
    reference = s6_recurrence(*inputs)
    assert normalised_error(selective_scan(*(t.float() for t in inputs)), reference) < 1e-5
    # the analytic backward against autograd through the step-by-step recurrence, float64
    leaves = [t[:, :9].clone().requires_grad_() if t.dim() == 3 else t.clone().requires_grad_() for t in inputs]
    weights = torch.randn(2, 9, 6, dtype=torch.float64)
    ours = torch.autograd.grad((selective_scan(*leaves) * weights).sum(), leaves)
    expected = torch.autograd.grad((s6_recurrence(*leaves) * weights).sum(), leaves)
    for g, e in zip(ours, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("chunk", "groups"), [(1, 1), (7, 2), (16, 1), (64, 4)])
def test_ssd_matches_float64_recurrence(chunk, groups):
    g = torch.Generator().manual_seed(chunk)
    batch, length, heads, p, n = 2, 45, 4, 3, 5
    x = torch.randn(batch, length, heads, p, generator=g, dtype=torch.float64)
    a = -torch.rand(batch, length, heads, generator=g, dtype=torch.float64) * 3
    B, C = (torch.randn(batch, length, groups, n, generator=g, dtype=torch.float64) for _ in range(2))
    reference = ssd_recurrence(x, a, B, C)
    assert normalised_error(ssd(x.float(), a.float(), B.float(), C.float(), chunk), reference) < 1e-5
    leaves = [t.clone().requires_grad_() for t in (x, a, B, C)]
    ours = torch.autograd.grad(ssd(*leaves, chunk).square().sum(), leaves)
    expected = torch.autograd.grad(ssd_recurrence(*leaves).square().sum(), leaves)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_scans_reject_bad_shapes():
    x, dt, A, B, C = s6_inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match="selective_scan"):
        selective_scan(x, dt[:, :-1], A, B, C)
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(x, dt, A.T, B, C)
    with pytest.raises(ValueError, match="multiple of groups"):
        ssd(torch.zeros(1, 4, 3, 2), torch.zeros(1, 4, 3), torch.zeros(1, 4, 2, 5), torch.zeros(1, 4, 2, 5))
    with pytest.raises(ValueError, match="expects input"):
        Mamba(16)(torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match="multiple of headdim"):
        Mamba2(16, headdim=12)


@pytest.mark.parametrize("name", sorted(pretrained.SPECS))
def test_models_on_the_ideal_chip_equal_float_and_map_every_linear(name):
    torch.manual_seed(0)
    model = pretrained.load(name) if name in pretrained.SHIPPED else pretrained.build(name).eval()
    inputs = torch.randint(0, 65, (2, 48), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the depthwise convolutions stay digital without a warning
        compiled = crossbar.compile(model, "ideal")
    with torch.no_grad():
        y, y_chip = model(inputs), compiled(inputs)
    assert float((y_chip - y).norm() / y.norm()) < 1e-4
    linear = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    tiled = {n for n, m in compiled.named_modules() if isinstance(m, TiledLinear)}
    assert tiled == linear and "blocks.0.mixer.out_proj" in tiled
    placements = {row.name: row.placement for row in crossbar.report(compiled).layers}
    assert placements["blocks.0.mixer.conv1d"] == "digital" and placements["encoder"] == "digital"


def test_depthwise_convolution_stays_digital_without_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(6, 6, 3, groups=6, padding=2), nn.Conv1d(6, 4, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled = crossbar.compile(model, "ideal")
    assert type(compiled[0]) is nn.Conv1d and isinstance(compiled[1], crossbar.TiledConv1d)
    assert mapped_layers(model) == ["1"]  # the layers noise studies treat as analog: the same as compile
    x = torch.randn(2, 6, 9)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


def test_digital_ops_closed_form():
    """batch 2 x length 3 = 6 tokens; Mamba d_inner 8, N 2; Mamba-2 d_inner 8, 2 heads, N 3, 1 group."""
    mamba = Mamba(4, d_state=2, expand=2)
    x = torch.randn(2, 3, 4)
    assert mamba.digital_ops((x,), mamba(x)) == {
        "mac": 6 * 8 * 3.0,  # C h (2) + D x (1)
        "add": 6 * 8 * 2.0,
        "mul": 6 * 8 * 8.0,  # dt A, drive, a h per state (3 x 2) + dt x + gate
        "nonlinear": 6 * 8 * 5.0 + 16,  # exp per state (2), 3 per channel; exp(A_log) once
        "memory_bytes": 4.0 * (2 * 6 * 8 * 2 + 16 + 8),
    }
    mamba2 = Mamba2(4, d_state=3, expand=2, headdim=4)
    assert mamba2.digital_ops((x,), mamba2(x)) == {
        "mac": 6 * (2 * 8 * 3 + 2 * 8.0),
        "add": 0.0,
        "mul": 6 * (8 * 3 + 4 * 8 + 2.0),
        "nonlinear": 6 * (2 * 8 + 2 * 3 + 2 * 2 + 1.0) + 2,
        "memory_bytes": 4.0 * (2 * 6 * 8 * 3 + 3 * 2 + 8),
    }


@pytest.mark.parametrize("name", pretrained.SHIPPED)
def test_shipped_language_models_beat_the_unigram_baseline(name):
    corpus = tiny_shakespeare()
    checkpoint = pretrained.read_checkpoint(name)
    assert checkpoint["vocabulary"] == corpus.vocabulary
    inputs, targets = lm_eval.windows(corpus.valid, checkpoint["training"]["context"], max_chars=4096)
    bits = lm_eval.bits_per_char(pretrained.load(name), inputs, targets)
    unigram = lm_eval.unigram_bits(corpus.train, targets, len(corpus.vocabulary))
    assert bits < unigram - 1.0, f"{name}: {bits:.3f} bits/char vs unigram {unigram:.3f}"


def test_training_is_reproducible_from_its_seed():
    runs = [train("mamba2-lm", steps=2, batch=2, lr=1e-3, context=32, seed=3, eval_chars=256)[1] for _ in range(2)]
    assert runs[0]["metrics"]["bits_per_char"] == runs[1]["metrics"]["bits_per_char"]
    for key, value in runs[0]["state_dict"].items():
        assert torch.equal(value, runs[1]["state_dict"][key]), key


def test_loader_errors(tmp_path):
    with pytest.raises(KeyError, match="unknown model"):
        pretrained.load("mamba-huge")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        pretrained.load("mamba-lm", tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        pretrained.load("mamba-lm", bad)
    assert bad.read_bytes() == b"not a checkpoint"
    wrong = tmp_path / "wrong.pt"
    torch.save(pretrained.read_checkpoint("mamba-lm"), wrong)
    with pytest.raises(ValueError, match="architecture"):
        pretrained.load("mamba2-lm", wrong)
