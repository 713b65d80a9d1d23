"""S4D, DSS, S4-PTD, S5, S5-PTD: kernels and scans vs a float64 recurrence, PTD conditioning, the shipped
checkpoints, ideal tiles vs float, digital operation counts and the mapping report."""

import math

import numpy as np
import pytest
import torch

import crossbar
from models import ssm_digits
from models.data import sequential_digits
from models.dss import DSS
from models.hippo import diagonal_init, eigenvector_condition, hippo_legs, legs_modal
from models.ptd import PTDSettings, optimise_perturbation, perturbation, ptd_modal
from models.s4d import S4D, fft_conv_ops
from models.s5 import S5, bc_as_linear, scan_ops


def _recurrence(da, db, c, d, u):
    """float64 step-by-step y_k = 2 Re(sum_m c x_k) + d u_k, x_k = da x_{k-1} + db u_k (per channel h).

    da, db, c: (H, M) complex; d (H,); u (B, L, H) -> y (B, L, H).
    """
    batch, length, channels = u.shape
    y = np.zeros((batch, length, channels))
    x = np.zeros((batch, *da.shape), dtype=complex)
    for k in range(length):
        x = da * x + db * u[:, k, :, None]
        y[:, k] = 2 * np.sum(c * x, axis=-1).real + d * u[:, k]
    return y


def _params(module, *names):
    return [getattr(module, n).detach().double().numpy() for n in names]


def _as_complex(pairs):
    return pairs[..., 0] + 1j * pairs[..., 1]


def _close(actual, expected, tol=1e-5):
    assert np.max(np.abs(actual - expected)) <= tol * np.max(np.abs(expected))


@pytest.mark.parametrize("init", ["legs", "lin", "inv", "ptd"])
@pytest.mark.parametrize("discretisation", ["zoh", "bilinear"])
def test_s4d_kernel_matches_recurrence(init, discretisation):
    torch.manual_seed(1)
    layer = S4D(3, 64 if init == "ptd" else 16, init, discretisation, dt_range=(0.01, 0.5), seed=2).double()
    u = torch.randn(2, 40, 3, dtype=torch.float64)
    log_dt, log_neg_real, imag, b, c, d = _params(layer, "log_dt", "log_neg_real", "imag", "B", "C", "D")
    lam, dt = -np.exp(log_neg_real) + 1j * imag, np.exp(log_dt)[:, None]
    if discretisation == "zoh":
        da = np.exp(dt * lam)
        db = (da - 1) / lam * _as_complex(b)
    else:
        da = (1 + dt * lam / 2) / (1 - dt * lam / 2)
        db = dt / (1 - dt * lam / 2) * _as_complex(b)
    expected = _recurrence(da, db, _as_complex(c), d, u.numpy())
    _close(layer.ssm(u).detach().numpy(), expected)


def test_dss_kernel_matches_recurrence():
    layer = DSS(3, 16, dt_range=(0.01, 0.5), seed=3).double()
    with torch.no_grad():  # a mode with a positive real part: DSS-softmax keeps it bounded
        layer.Lambda[2, 0] = 0.3
    u = torch.randn(2, 40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    log_dt, lam, w, d = _params(layer, "log_dt", "Lambda", "W", "D")
    dt_lam = np.exp(log_dt)[:, None] * _as_complex(lam)
    da = np.exp(dt_lam)
    normaliser = sum(da**r for r in range(40))
    db = (da - 1) / (_as_complex(lam) * normaliser)
    _close(layer.ssm(u).detach().numpy(), _recurrence(da, db, _as_complex(w), d, u.numpy()))


@pytest.mark.parametrize("init", ["legs", "ptd"])
@pytest.mark.parametrize("linear_bc", [False, True])
def test_s5_scan_matches_recurrence(init, linear_bc):
    layer = S5(3, 64, init, dt_range=(0.01, 0.5), seed=4).double()
    u = torch.randn(2, 37, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    log_dt, log_neg_real, imag, b, c, d = _params(layer, "log_dt", "log_neg_real", "imag", "B", "C", "D")
    lam = -np.exp(log_neg_real) + 1j * imag
    da = np.exp(np.exp(log_dt) * lam)
    b_bar = ((da - 1) / lam)[:, None] * _as_complex(b)  # (M, H)
    x = np.zeros((2, len(lam)), dtype=complex)
    expected = np.zeros((2, 37, 3))
    for k in range(37):
        x = da * x + u[:, k].numpy() @ b_bar.T
        expected[:, k] = 2 * (x @ _as_complex(c).T).real + d * u[:, k].numpy()
    if linear_bc:
        layer = bc_as_linear(torch.nn.Sequential(layer))[0]
        assert isinstance(layer.B_linear, torch.nn.Linear) and not hasattr(layer, "B")
    _close(layer.ssm(u).detach().numpy(), expected)


def test_diagonal_inits_are_the_published_ones():
    lam, b = diagonal_init("lin", 8)
    np.testing.assert_allclose(lam, -0.5 + 1j * np.pi * np.arange(4))
    lam, _ = diagonal_init("inv", 8)
    np.testing.assert_allclose(lam.imag, 8 / np.pi * (8 / (2 * np.arange(4) + 1) - 1))
    # S4D-LegS: the eigenvalues of the normal part S = A + P P^T of HiPPO-LegS, B = V^H (2n+1)^1/2.
    a, bh = hippo_legs(16)
    p = np.sqrt(np.arange(16) + 0.5)
    eigenvalues = np.linalg.eigvals(a + np.outer(p, p))
    lam, b = diagonal_init("legs", 16)
    np.testing.assert_allclose(np.sort(lam.imag), np.sort(eigenvalues.imag[eigenvalues.imag > 0]), atol=1e-10)
    np.testing.assert_allclose(lam.real, -0.5, atol=1e-12)
    _, into, out = legs_modal(16)
    c = np.random.default_rng(0).standard_normal(16)
    s = a + np.outer(p, p)
    for k in range(4):  # the modal system reproduces the Markov parameters C S^k B
        ref = c @ np.linalg.matrix_power(s, k) @ bh
        assert 2 * np.real((c @ out) * lam**k @ b) == pytest.approx(ref, rel=1e-9)


def test_ptd_condition_numbers():
    """HiPPO-LegS N=64: kappa(V) ~4e20 before, ~41 after PTD with ||E|| ~0.4% of ||A|| (shipped perturbation)."""
    a, b = hippo_legs(64)
    e = perturbation(64)
    before, after = eigenvector_condition(a), eigenvector_condition(a + e)
    relative = np.linalg.norm(e, 2) / np.linalg.norm(a, 2)
    print(f"kappa(V) HiPPO-LegS N=64: {before:.3g} -> {after:.3g} after PTD, ||E||/||A|| = {relative:.4f}")
    assert before > 1e18 and after < 60 and relative < 0.01
    lam, into, out = ptd_modal(64)
    assert np.all(lam.real < -0.49)  # stable
    c = np.random.default_rng(0).standard_normal(64)
    for k in range(4):  # the modal form reproduces C (A+E)^k B
        assert 2 * np.real((c @ out) * lam**k @ (into @ b)) == pytest.approx(
            c @ np.linalg.matrix_power(a + e, k) @ b, rel=1e-8
        )
    # The optimisation itself, small and short: N = 16 from kappa ~1e9 to a well-conditioned A + E.
    a16, _ = hippo_legs(16)
    e16 = optimise_perturbation(16, PTDSettings(steps=150))
    assert eigenvector_condition(a16) > 1e8 and eigenvector_condition(a16 + e16) < 60
    assert np.linalg.norm(e16, 2) < 0.03 * np.linalg.norm(a16, 2)


def test_ptd_transfer_function_is_closer_to_hippo_than_s4d_legs():
    """G(i w) = C (i w - A)^-1 B on |w| <= 200, random C: the PTD modes track HiPPO-LegS about 9x closer than
    S4D-LegS's (which drops the low-rank term), max error relative to max |G_HiPPO|: ~1.1 vs ~8.4."""
    a, b = hippo_legs(64)
    c = np.random.default_rng(0).standard_normal(64)
    omegas = np.linspace(-200, 200, 401)
    hippo = np.array([c @ np.linalg.solve(1j * w * np.eye(64) - a, b) for w in omegas])

    def modal(lam, into, out):
        residue = (c @ out) * (into @ b)
        return np.array([np.sum(residue / (1j * w - lam) + residue.conj() / (1j * w - lam.conj())) for w in omegas])

    scale = np.max(np.abs(hippo))
    legs_error = np.max(np.abs(modal(*legs_modal(64)) - hippo)) / scale
    ptd_error = np.max(np.abs(modal(*ptd_modal(64)) - hippo)) / scale
    print(f"transfer-function error vs HiPPO-LegS: S4D-LegS {legs_error:.3g}, PTD {ptd_error:.3g}")
    assert ptd_error < legs_error / 5


@pytest.fixture(scope="module")
def digits():
    _, _, x_test, y_test = sequential_digits()
    return x_test, y_test


@pytest.mark.parametrize("name", list(ssm_digits.MODELS))
def test_checkpoint_accuracy_and_ideal_chip(name, digits):
    x_test, y_test = digits
    variants = [variant for _, variant in ssm_digits.variants(name)]  # the model, and for S5 B, C on tiles
    with torch.no_grad():
        reference = variants[0](x_test)
    assert float((reference.argmax(1) == y_test).float().mean()) >= 0.90
    for variant in variants:
        with torch.no_grad():
            ideal = crossbar.compile(variant, "ideal")(x_test[:200])
        assert torch.max(torch.abs(ideal - reference[:200])) <= 1e-4 * torch.max(torch.abs(reference[:200]))


def test_mapping_report_lists_analog_and_digital_work():
    model = ssm_digits.build("s5")
    rows = {row.name: row for row in crossbar.report(crossbar.compile(model, "ideal")).layers}
    assert rows["blocks.0.mixer"].placement == "digital" and rows["blocks.0.mixer"].kind == "S5"
    assert rows["blocks.0.mixer.output.linear"].placement == "analog"
    assert rows["blocks.0.norm"].placement == "digital"
    assert "blocks.0.mixer.B_linear" not in rows
    rows = {row.name: row for row in crossbar.report(crossbar.compile(bc_as_linear(model), "ideal")).layers}
    assert rows["blocks.1.mixer.B_linear"].placement == "analog" and rows["blocks.1.mixer.B_linear"].shape == (64, 64)


def test_digital_ops_closed_form():
    """Hand-counted case: batch 1, length 4, H = 2 channels, M = 4 modes (state size 8)."""
    assert fft_conv_ops(1, 2, 4) == {"mul": 6 * 8 * 3 + 4 * 2 * 5, "add": 6 * 12 * 3 + 2 * 2 * 5}
    u = torch.randn(1, 4, 2)
    layer = S4D(2, 8, "lin")
    ops = layer.digital_ops((u,), layer(u))
    hm, hml = 8, 32
    assert ops["mac"] == 2 * hml + 8 and ops["nonlinear"] == 3 * hm + 3 * hml
    assert ops["mul"] == 184 + 16 * hm + 2 * hml and ops["add"] == 236 + 7 * hm
    assert ops["memory_bytes"] == 4 * (2 * 8 + 8 + sum(p.numel() for p in layer.parameters(recurse=False)))
    # Scan, L = 4: offsets 1 and 2 shift 3 + 2 positions; 2 squarings of the M = 4 transition factors.
    assert scan_ops(1, 4, 4) == {"mul": 4 * 5 * 4 + 4 * 2 * 4, "add": 4 * 5 * 4 + 2 * 2 * 4}
    s5 = S5(2, 8, "legs")
    ops = s5.digital_ops((u,), s5(u))
    assert ops["nonlinear"] == 6 * 4 and ops["mac"] == 8 + 4 * 16 * 2
    assert all(value > 0 for value in DSS(2, 8).digital_ops((u,), u).values())


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="expects"):
        S4D(4, 8)(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="expects"):
        S5(4, 8)(torch.randn(5, 4))
    with pytest.raises(ValueError, match="init"):
        S4D(4, 8, init="fourier")
    with pytest.raises(ValueError, match="discretisation"):
        S4D(4, 8, discretisation="euler")
    with pytest.raises(ValueError, match="even"):
        S4D(4, 7)
    with pytest.raises(ValueError, match="unknown model"):
        ssm_digits.load("s6")
    with torch.no_grad():
        assert math.isfinite(float(S4D(4, 8)(torch.randn(1, 3, 4)).sum()))
