"""Calibration: measured data -> HDF5 -> fitted device profile -> simulator, against independent references.

References: aihwkit's PCMLikeNoiseModel (the round trip), the raw techC/techA lab files read here with numpy,
closed forms of the profile's own distributions.
"""

import gzip
import json

import numpy as np
import pytest
import torch
from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
from calibration_data import TECHA, TECHC

import calibration
import crossbar
from calibration import fitting, importers
from crossbar import ChipConfig, ConfigError
from crossbar import device as device_module
from crossbar.fileio import write_text_atomic
from crossbar.profile import DeviceProfile, ProfileError, RelaxationTable, load_profile
from models import demo
from models.data import digits_split


@pytest.fixture(scope="session")
def techc_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("techc") / "techc.h5"
    importers.convert("techc-relaxation", TECHC, path)
    return path


@pytest.fixture(scope="session")
def techc_fit(techc_h5):
    return fitting.fit_with_report(techc_h5, name="techc")


def test_techc_import_keeps_every_measured_read(techc_h5):
    raw = np.loadtxt(TECHC, delimiter="\t")  # addr, time, r, g, gi, range, timept
    data = calibration.read(techc_h5)
    r = data.relaxation
    assert r.cell.size == np.unique(raw[:, 0]).size
    assert r.time.tolist() == sorted(set(raw[:, 6]))
    assert np.isfinite(r.conductance).sum() == raw.shape[0]
    # one raw row, found again in the table
    row = raw[1234]
    i, k = np.searchsorted(r.cell, row[0]), np.searchsorted(r.time, row[6])
    assert r.conductance[i, k] == row[3]
    assert r.target_conductance[i] == pytest.approx((row[5] + 0.5) * 40e-6 / 32)
    # the programming group is the read at t = 0, which the file also gives as gi
    at_zero = raw[raw[:, 6] == 0]
    order = np.argsort(at_zero[:, 0])
    np.testing.assert_array_equal(data.programming.conductance, at_zero[order, 4])
    assert data.g_max == 40e-6 and "MIT" in data.licence


def _pcm_measurements(model, levels, cells, times, seed):
    """Targets (N,) uS and reads (N, T) uS of cells programmed once and read at ``times`` (aihwkit's model)."""
    torch.manual_seed(seed)
    target = torch.from_numpy(np.repeat(levels, cells))
    programmed = model.apply_programming_noise_to_conductance(target)
    nu = model.generate_drift_coefficients(target)
    reads = [model.apply_drift_noise_to_conductance(programmed, nu, t).numpy() for t in times]
    return target.numpy(), np.stack(reads, axis=1)


def test_round_trip_through_csv_reproduces_the_generating_pcm_model(tmp_path):
    """aihwkit's PCM model with non-default coefficients -> CSV -> HDF5 -> fit -> profile: std per level within 10%."""
    g_max_us = 25.0
    model = PCMLikeNoiseModel(prog_coeff=[0.6, 1.2, -0.8], g_max=g_max_us, drift_scale=1.5, read_noise_scale=0.5)
    levels = np.linspace(0.1, 1.0, 10) * g_max_us
    times = [0.0, 10.0, 100.0, 1000.0, 1e4, 1e5]
    target, reads = _pcm_measurements(model, levels, 2000, times, seed=0)
    cells = np.arange(target.size)
    rows = np.concatenate(
        [np.column_stack([cells, target, np.full_like(target, t), reads[:, k]]) for k, t in enumerate(times)]
    )
    rows[:, 1:] *= [1e-6, 1.0, 1e-6]  # uS -> S
    csv_path = tmp_path / "pcm.csv"
    np.savetxt(csv_path, rows, delimiter=",", header=",".join(importers.CSV_COLUMNS), comments="", fmt="%.17g")
    importers.convert("csv", csv_path, tmp_path / "pcm.h5", g_max=g_max_us * 1e-6)
    result = fitting.fit_with_report(tmp_path / "pcm.h5")
    assert result.drift_model == "power_law"  # PCM data drift as a power law; the fit finds it
    check_times = [0.0, 3600.0, 86400.0]  # 3600 s and 1 day were not measured
    _, fresh = _pcm_measurements(model, levels, 10000, check_times, seed=99)
    for k, t in enumerate(check_times):
        reference = fresh[:, k].reshape(levels.size, -1).std(axis=1) * 1e-6
        sampled = result.profile.program(np.repeat(levels[:, None] * 1e-6, 10000, axis=1), t, seed=5).std(axis=1)
        assert np.max(np.abs(sampled / reference - 1)) < 0.10, (t, sampled / reference)


def test_techc_fitted_spread_matches_the_held_out_spread(techc_fit, techc_h5):
    """Std of the profile fitted to one half of each level's cells, sampled, against the measured std of the
    other half, per level and time (figure: docs/figures/calibration_techc.png)."""
    goodness = techc_fit.goodness
    error = np.abs(goodness.std_error())
    assert techc_fit.drift_model == "spread_table"  # RRAM relaxation is not a power law
    assert techc_fit.power_law_error > 0.5
    assert goodness.measured is techc_fit.validation
    _, cells = np.unique(calibration.read(techc_h5).relaxation.target_conductance, return_counts=True)
    held_out = goodness.measured.count.max(axis=1)  # reads of a level at its most-read time
    assert np.all(held_out <= cells // 2) and held_out.sum() > 0.99 * np.sum(cells // 2)  # half of each level
    median = np.nanmedian(error, axis=0)
    # measured 1.3, 7.7, 10.0, 8.4, 8.5, 5.5 %; a perfect model would show 2.0, 7.4, 6.9, 5.9, 8.1, 4.5 % from
    # the scatter of the held-out std of heavy-tailed reads alone (median kurtosis 5-13 per time, up to 53);
    # the bootstrap and split-half floors of benchmarks/calibration_techc.py agree (docs/calibration.md)
    assert median[0] < 0.03
    assert np.all(median < 0.11), median
    assert np.nanmedian(error) < 1.3 * np.nanmedian(goodness.noise_floor())
    assert goodness.fitted_levels.any(axis=1).sum() == 33  # 32 levels + the cells just above g_max


def test_shipped_techc_profile_is_the_fit_of_the_data(techc_fit):
    shipped = load_profile("techc")
    assert shipped.g_max == 40e-6 and shipped.spread is not None
    assert shipped.spread.times == techc_fit.profile.spread.times
    np.testing.assert_allclose(shipped.spread.std, techc_fit.profile.spread.std, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(shipped.spread.quantiles, techc_fit.profile.spread.quantiles, rtol=1e-9, atol=1e-12)


def test_compiled_model_runs_on_a_chip_naming_the_techc_profile(tmp_path):
    model = demo.load_model()
    _, _, x_test, y_test = digits_split()
    chip = ChipConfig.preset("ideal").replace(
        device={"model": "profile", "profile": "techc", "t_inference": 86400.0}, mapping={"g_max": 40e-6}
    )
    chip.to_json(tmp_path / "chip.json")
    chip = ChipConfig.load(tmp_path / "chip.json")
    with torch.no_grad():
        ideal = model(x_test)
        on_chip = crossbar.compile(model, chip, seed=0)(x_test)
    error = float((on_chip - ideal).norm() / ideal.norm())
    assert 0.005 < error < 0.5  # the device changes the outputs, and the network still works
    assert float((on_chip.argmax(dim=1) == y_test).float().mean()) > 0.9


def test_profile_json_round_trip_seeds_and_g_max_scaling(techc_fit, tmp_path):
    profile = techc_fit.profile
    profile.save(tmp_path / "p.json")
    loaded = DeviceProfile.load(tmp_path / "p.json")
    assert loaded == profile
    targets = np.full((3, 20000), 20e-6)
    a, b = loaded.program(targets, 1.0, seed=3), loaded.program(targets, 1.0, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, loaded.program(targets, 1.0, seed=4))
    # at t = 0 the table's std, exactly; on a chip with twice the g_max, twice the siemens
    g_target = np.full(40000, 20e-6)
    _, sigma = profile.spread.moments(g_target[:1], 0.0)
    assert np.std(loaded.program(g_target, 0.0, seed=1)) == pytest.approx(sigma[0], rel=0.03)
    doubled = loaded.program(2 * g_target, 0.0, seed=1, g_max=80e-6)
    assert np.std(doubled) == pytest.approx(2 * sigma[0], rel=0.03)


def test_relaxation_table_interpolates_in_log_time():
    """Between table times the std polynomial's coefficients blend linearly in log t."""
    profile = DeviceProfile(
        name="t",
        technology="synthetic",
        g_max=10e-6,
        relaxation=RelaxationTable(
            times=[0.0, 1.0, 100.0], mean=[[0.0], [0.0], [-1e-6]], std=[[0.1e-6], [0.2e-6], [0.6e-6]]
        ),
    )
    g = profile.program(np.full(100000, 5e-6), 10.0, seed=0)  # halfway in log t between 1 and 100 s
    assert np.std(g) == pytest.approx(0.4e-6, rel=0.02)
    assert np.mean(g) - 5e-6 == pytest.approx(-0.5e-6, abs=0.01e-6)
    g = profile.program(np.full(100000, 5e-6), 0.25, seed=0)  # linear in t below the first positive time
    assert np.std(g) == pytest.approx(0.125e-6, rel=0.02)
    with pytest.raises(ProfileError, match="outside the measured times"):
        profile.program(np.full(4, 5e-6), 1000.0, seed=0)


def test_techa_read_noise_profile_reproduces_each_cells_read_noise(tmp_path):
    with gzip.open(TECHA, "rt") as handle:
        reads = np.array([np.array(line.split("\t"), dtype=float)[2:] for line in handle])
    rate = json.loads((TECHA.parent / "settings.json").read_text())["fs"]
    windows = reads[:, : reads.shape[1] // int(rate) * int(rate)].reshape(reads.shape[0], -1, int(rate))
    measured = np.sqrt(np.mean(np.var(windows, axis=2, ddof=1), axis=1))  # std within 1 s windows
    importers.convert("techa-read-noise", TECHA, tmp_path / "techa.h5")
    profile = calibration.fit(tmp_path / "techa.h5", order=4)  # 5 cells: order 4 passes through every one
    assert profile.programming is None and profile.relaxation is None and profile.read_noise.window == 1.0
    means = reads.mean(axis=1)
    sampled = profile.program(np.repeat(means[:, None], 40000, axis=1), 1.0, seed=0)
    np.testing.assert_allclose(np.std(sampled, axis=1), measured, rtol=0.03)


def test_chip_config_names_profiles_with_clear_errors(tmp_path):
    """Validating a config opens no file; the profile is loaded, and its errors raised, when a chip is
    programmed with it."""
    base = ChipConfig.preset("default")

    def program(**device: object) -> None:
        chip = base.replace(device={"model": "profile", **device})
        device_module.noise_model(chip.device, chip.mapping)

    with pytest.raises(ConfigError, match="device.profile: unknown profile 'nope'"):
        program(profile="nope")
    with pytest.raises(ConfigError, match="device.profile: .*missing.json: no such profile file"):
        program(profile=str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="device.profile: .*not valid JSON"):
        program(profile=str(bad))
    write_text_atomic(bad, json.dumps({"format": "crossbar-device-profile", "version": 1, "name": "x"}))
    with pytest.raises(ConfigError, match="technology: missing"):
        program(profile=str(bad))
    with pytest.raises(ConfigError, match="device.profile: model 'profile' needs"):
        base.replace(device={"model": "profile"})
    with pytest.raises(ConfigError, match=r"device.t_inference: profile 'techc' is measured from 0 to 100000 s"):
        program(profile="techc", t_inference=1e6)
