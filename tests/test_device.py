"""Device physics through aihwkit's noise models, checked against their published closed forms."""

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

import crossbar
from crossbar import ChipConfig, ConfigError
from crossbar.config import DeviceConfig, MappingConfig
from crossbar.device import program

PCM_COEFF_US = (0.26348, 1.9650, -1.1731)  # aihwkit PCMLikeNoiseModel defaults, fitted at g_max = 25 uS


def pcm_sigma(g, g_max):
    """Programming-error std (siemens) of the published PCM model, rescaled to g_max."""
    r = g / g_max
    c0, c1, c2 = PCM_COEFF_US
    return (c0 + c1 * r + c2 * r**2) * 1e-6 * (g_max / 25e-6)


@pytest.mark.parametrize("g_max", [25e-6, 50e-6])
def test_programming_error_has_the_statistics_of_the_pcm_model(g_max):
    mapping = MappingConfig(g_max=g_max)
    device = DeviceConfig(model="pcm", t_inference=0.0, drift_scale=0.0, read_noise_scale=0.0)
    levels = np.linspace(0.2, 1.0, 5) * g_max
    targets = np.repeat(levels[:, None], 20000, axis=1)
    programmed = program(targets, device, mapping, seed=1).programmed
    for level, row in zip(levels, programmed, strict=True):
        sigma = pcm_sigma(level, g_max)
        assert np.mean(row) == pytest.approx(level, abs=4 * sigma / np.sqrt(row.size))
        assert np.std(row) == pytest.approx(sigma, rel=0.03)
        assert stats.kstest((row - level) / sigma, "norm").pvalue > 1e-3


def test_drift_follows_the_pcm_power_law():
    """Mean g(t)/g(0) against E[(t/t0)^-nu], nu = |N(mu, sigma)| with the model's published mu(g), sigma(g)."""
    g_max = 25e-6
    t_inference, t0 = 86400.0, 20.0
    device = DeviceConfig(model="pcm", t_inference=t_inference, prog_noise_scale=0.0, read_noise_scale=0.0)
    level = 0.5 * g_max
    drifted = program(np.full(50000, level), device, MappingConfig(g_max=g_max), seed=2).at_inference
    mu = np.clip(-0.0155 * np.log(0.5) + 0.0244, 0.049, 0.1)
    sigma = np.clip(-0.0125 * np.log(0.5) - 0.0059, 0.008, 0.045)
    log_ratio = np.log((t_inference + t0) / t0)
    expected, _ = integrate.quad(
        lambda z: np.exp(-abs(mu + sigma * z) * log_ratio) * stats.norm.pdf(z), -np.inf, np.inf
    )
    assert np.mean(drifted / level) == pytest.approx(expected, rel=2e-3)


def test_global_drift_compensation_restores_the_output_scale():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128))
    x = torch.randn(64, 256)
    drift_only = ChipConfig.preset("ideal").replace(
        device={
            "model": "pcm",
            "t_inference": 86400.0 * 30,
            "prog_noise_scale": 0.0,
            "read_noise_scale": 0.0,
            "drift_scale": 1.0,
            "drift_compensation": False,
        }
    )
    compensated = drift_only.replace(device={"drift_compensation": True})
    with torch.no_grad():
        ref = model(x)
        err_raw = float((crossbar.compile(model, drift_only)(x) - ref).norm() / ref.norm())
        err_comp = float((crossbar.compile(model, compensated)(x) - ref).norm() / ref.norm())
    assert err_raw > 0.2  # a month of PCM drift shrinks the conductances by about a third
    assert err_comp < 0.5 * err_raw


def test_device_models_are_selectable_and_validated():
    model = nn.Sequential(nn.Linear(32, 16))
    x = torch.randn(4, 32)
    base = ChipConfig.preset("default")
    for chip in (
        base.replace(device={"model": "hermes"}, mapping={"g_max": 20e-6}),
        base.replace(device={"model": "reram_wan2022", "t_inference": 86400.0}, mapping={"g_max": 40e-6}),
    ):
        with torch.no_grad():
            assert torch.isfinite(crossbar.compile(model, chip)(x)).all()
    with pytest.raises(ConfigError, match="device.t_inference.*reram_wan2022"):
        crossbar.compile(model, base.replace(device={"model": "reram_wan2022", "t_inference": 3600.0}))
    with pytest.raises(ConfigError, match="mapping.g_max.*HERMES"):
        crossbar.compile(model, base.replace(device={"model": "hermes"}, mapping={"g_max": 25e-6}))


def test_reram_coefficients_are_rescaled_to_g_max():
    """aihwkit 1.1.0 never rescales ReRamWan2022's 40 uS fit; crossbar's workaround keeps relative noise fixed."""
    device = DeviceConfig(model="reram_wan2022", t_inference=1.0)
    relative = []
    for g_max in (20e-6, 80e-6):
        targets = np.full(40000, 0.5 * g_max)
        programmed = program(targets, device, MappingConfig(g_max=g_max), seed=3).programmed
        relative.append(np.std(programmed) / g_max)
    coeff = [0.348, 16.030, -43.853, 45.393, -16.815]  # 1 s fit, uS at 40 uS (c0 first)
    expected = sum(c * 0.5**i for i, c in enumerate(coeff)) / 40.0
    assert relative == pytest.approx([expected, expected], rel=0.03)
