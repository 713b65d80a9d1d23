"""The nonparametric spread model, the importer for any technology, held-out model selection and
extrapolation, against independent references: a known synthetic law, numpy reads of the raw lab files,
closed forms of the profile's table."""

import hashlib
import json
import shutil
import warnings
from dataclasses import replace

import numpy as np
import pytest
from calibration_data import TECHB_FOLDER
from test_cli import run_cli

import calibration
from calibration import fitting, importers
from calibration.schema import Measurements, Relaxation, SchemaError
from crossbar.profile import DeviceProfile, ProfileError
from crossbar.spread_table import SpreadTable

G_MAX = 50e-6
TIMES = (0.0, 1.0, 100.0)


def spread_law(x, t):
    """A std (S) peaked at mid range, collapsing at high conductance and rising again above g_max, growing
    with time: what a quartic cannot follow. x = g_target / g_max, t in s."""
    shape = 0.25 + np.exp(-(((x - 0.45) / 0.13) ** 2)) + 6.0 * np.maximum(x - 1.0, 0.0) ** 2
    return 0.4e-6 * shape * (1 + 0.3 * np.log10(1 + t))


def mean_law(x, t):
    return -0.5e-6 * np.sin(np.pi * x) * np.log10(1 + t)


def synthetic(cells_per_level, seed, deviates=None, levels=28):
    """Measurements of ``levels`` levels from 0.05 to 1.4 g_max read at TIMES, g = target + mean + std z."""
    rng = np.random.default_rng(seed)
    levels = np.linspace(0.05, 1.4, levels) * G_MAX
    target = np.repeat(levels, cells_per_level)
    x = target / G_MAX
    z = rng.standard_normal((target.size, len(TIMES))) if deviates is None else deviates(rng, (target.size, 3))
    reads = np.stack([target + mean_law(x, t) + spread_law(x, t) * z[:, k] for k, t in enumerate(TIMES)], axis=1)
    relaxation = Relaxation(np.arange(target.size), target, np.asarray(TIMES), reads)
    programming = calibration.schema.Programming(relaxation.cell, target, reads[:, 0], np.zeros(target.size))
    return Measurements("synthetic", G_MAX, "test", "", programming=programming, relaxation=relaxation)


@pytest.fixture(scope="module")
def synthetic_fit():
    return fitting.fit_measurements(synthetic(700, seed=1), "synthetic")


def test_non_monotonic_spread_is_recovered_per_level_and_time(synthetic_fit):
    """The profile's samples against the generating law: within 5 % at every level and time (27 levels)."""
    profile = synthetic_fit.profile
    assert profile.spread is not None and synthetic_fit.drift_model == "spread_table"
    levels = np.linspace(0.05, 1.4, 28)[1:] * G_MAX  # the lowest level is the grid's edge: covered below
    draws = np.repeat(levels[:, None], 20000, axis=1)
    for t in TIMES:
        g = profile.program(draws, t, seed=3)
        error = g.std(axis=1) / spread_law(levels / G_MAX, t) - 1
        assert np.max(np.abs(error)) < 0.05, (t, np.round(error, 3))
        offset = g.mean(axis=1) - levels - mean_law(levels / G_MAX, t)
        assert np.max(np.abs(offset) / spread_law(levels / G_MAX, t)) < 0.1
    # the quartic (the ReRamWan2022 form used before) cannot follow this law
    quartic = fitting.fit_measurements(synthetic(700, seed=1), "quartic", spread_model="polynomial")
    std, _ = quartic.profile.spread.moments(levels, 100.0)[1], None
    assert np.max(np.abs(std / spread_law(levels / G_MAX, 100.0) - 1)) > 0.3


def test_model_selection_uses_the_validation_half(synthetic_fit):
    selection = synthetic_fit.selection
    for k in range(len(TIMES)):
        errors = selection.std_errors[k]
        assert errors[selection.std[k].label()] == min(errors.values())
        assert errors["polynomial"] > 3 * errors[selection.std[k].label()]  # the quartic cannot follow it
    assert synthetic_fit.validation.count[:, 0].sum() == 28 * 350  # half of each level held out
    assert synthetic_fit.profile.fitted_from["split_seed"] == 0
    other = fitting.fit_measurements(synthetic(700, seed=1), "s", split_seed=1)
    assert not np.array_equal(other.validation.std, synthetic_fit.validation.std)


def test_sampled_tails_follow_the_measured_distribution():
    """Laplace-distributed deviations: the profile's 1 % and 99 % quantiles are the Laplace ones (2.77 std
    from the mean), not a Gaussian's (2.33)."""

    def laplace(rng, shape):
        return rng.laplace(size=shape) / np.sqrt(2)  # unit variance

    profile = fitting.fit_measurements(synthetic(3000, seed=2, deviates=laplace, levels=10), "laplace").profile
    levels = np.linspace(0.05, 1.4, 10)[2:8] * G_MAX
    g = profile.program(np.repeat(levels[:, None], 100000, axis=1), 1.0, seed=4)
    z = (g - g.mean(axis=1, keepdims=True)) / g.std(axis=1, keepdims=True)
    tails = (np.quantile(z, 0.99, axis=1) - np.quantile(z, 0.01, axis=1)) / 2
    laplace_tail = -np.log(0.02) / np.sqrt(2)  # 2.766
    assert np.mean(tails) == pytest.approx(laplace_tail, rel=0.05)
    assert abs(np.mean(tails) / 2.326 - 1) > 0.1  # a Gaussian's 1 % quantile is 2.326 std away


def test_spread_table_interpolates_and_refuses_or_clamps_outside():
    table = SpreadTable(
        times=[0.0, 1.0, 100.0],
        conductance=[10e-6, 20e-6],
        mean=[[0.0, 0.0], [0.0, 0.0], [-1e-6, -3e-6]],
        std=[[0.1e-6, 0.3e-6], [0.2e-6, 0.2e-6], [0.6e-6, 1.0e-6]],
        quantile_levels=[15e-6],
        probabilities=[0.0, 0.5, 1.0],
        quantiles=[[[-1.0, 0.0, 3.0]]] * 3,
    )
    profile = DeviceProfile(name="t", technology="synthetic", g_max=G_MAX, spread=table)
    mean, std = table.moments(np.array([15e-6]), 10.0)  # halfway in g and in log t between 1 and 100 s
    assert std[0] == pytest.approx(0.5 * 0.2e-6 + 0.5 * 0.8e-6) and mean[0] == pytest.approx(-1e-6)
    g = profile.program(np.full(200000, 15e-6), 10.0, seed=0)
    assert np.std(g) == pytest.approx(0.5e-6, rel=0.01) and np.mean(g) - 15e-6 == pytest.approx(-1e-6, abs=5e-9)
    # the skewed table's shape, closed form: Q(u) piecewise linear through (0, -1), (0.5, 0), (1, 3) has mean
    # 0.5 and variance 1/6 + 3/2 - 1/4, so its 0.1 % and 99.9 % quantiles lie at (-0.998 - 0.5) / sd and
    # (2.994 - 0.5) / sd
    sd = np.sqrt(1 / 6 + 3 / 2 - 0.25)
    z = (g - np.mean(g)) / np.std(g)
    assert np.quantile(z, [0.001, 0.999]) == pytest.approx([-1.498 / sd, 2.494 / sd], rel=0.02)
    with pytest.warns(UserWarning, match="1 of 3 target conductances lie outside the measured range"):
        g = profile.program(np.array([5e-6, 10e-6, 20e-6]), 0.0, seed=0)
    with pytest.raises(ProfileError, match="outside the measured times"):
        profile.program(np.full(3, 15e-6), 1000.0, seed=0)
    strict = DeviceProfile(name="t", technology="s", g_max=G_MAX, spread=replace(table, outside="error"))
    with pytest.raises(ProfileError, match="spread: 1 of 1 target conductances lie outside"):
        strict.program(np.array([30e-6]), 0.0, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strict.program(np.array([12e-6]), 0.0, seed=0)  # inside: no warning


def test_exact_zero_targets_are_unprogrammed_cells_at_the_lowest_measured_state():
    """0 S (the idle device of a differential pair, tile padding at g_min = 0) is a reset cell: the offset and
    spread of the lowest measured conductance about 0 S, clamped at 0, with no warning even when the policy
    refuses extrapolation; a non-zero target below the range is still refused."""
    table = SpreadTable(
        times=[0.0],
        conductance=[10e-6, 20e-6],
        mean=[[0.0, 0.0]],
        std=[[0.1e-6, 0.3e-6]],
        quantile_levels=[15e-6],
        probabilities=[0.0, 0.5, 1.0],
        quantiles=[[[-1.0, 0.0, 3.0]]],
        outside="error",
    )
    profile = DeviceProfile(name="t", technology="synthetic", g_max=G_MAX, spread=table)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = profile.program(np.zeros(200000), 0.0, seed=0)
    # closed form: z = (Q(u) - 0.5) / sd with Q through (0, -1), (0.5, 0), (1, 3) is <= 0 for u <= 0.5 + 0.5 / 6
    assert np.mean(g == 0) == pytest.approx(0.5 + 0.5 / 6, abs=0.005)
    sd = np.sqrt(1 / 6 + 3 / 2 - 0.25)
    assert np.max(g) == pytest.approx(0.1e-6 * (3 - 0.5) / sd, rel=1e-3)  # the largest deviation of 10 uS
    lowest = profile.program(np.full(200000, 10e-6), 0.0, seed=0)  # same seed, same draws
    assert g == pytest.approx(np.maximum(lowest - 10e-6, 0.0), abs=1e-18)  # float rounding of 10 uS + d
    with pytest.raises(ProfileError, match="1 of 2 target conductances lie outside"):
        profile.program(np.array([0.0, 1e-9]), 0.0, seed=0)


def test_profile_versions_round_trip_and_old_profiles_load(synthetic_fit, tmp_path):
    profile = synthetic_fit.profile
    profile.save(tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["version"] == 2 and data["spread"]["outside"] == "clamp"
    loaded = DeviceProfile.load(tmp_path / "p.json")
    assert loaded == profile
    targets = np.full((2, 5000), 20e-6)
    np.testing.assert_array_equal(loaded.program(targets, 1.0, seed=7), profile.program(targets, 1.0, seed=7))
    version_1 = {
        "format": "crossbar-device-profile",
        "version": 1,
        "name": "old",
        "technology": "x",
        "g_max": 40e-6,
        "relaxation": {"times": [0.0, 10.0], "mean": [[0.0], [0.0]], "std": [[1e-6], [2e-6]]},
    }
    old = DeviceProfile.from_dict(version_1)
    assert old.relaxation is not None and old.spread is None
    assert np.std(old.program(np.full(40000, 20e-6), 10.0, seed=0)) == pytest.approx(2e-6, rel=0.03)
    with pytest.raises(ProfileError, match="spread: needs profile version 2"):
        DeviceProfile.from_dict({**version_1, "spread": data["spread"]})
    bad = {**data, "spread": {**data["spread"], "outside": "extrapolate"}}
    with pytest.raises(ProfileError, match="spread.outside: must be one of"):
        DeviceProfile.from_dict(bad)
    reversed_tables = [[q[::-1] for q in tables] for tables in data["spread"]["quantiles"]]
    with pytest.raises(ProfileError, match="spread.quantiles: each quantile table must be non-decreasing"):
        DeviceProfile.from_dict({**data, "spread": {**data["spread"], "quantiles": reversed_tables}})


def test_relaxation_importer_reads_another_technology(tmp_path):
    """techB (never used to develop the calibration): g_max 128 uS, 7 times, levels above g_max kept."""
    raw = np.loadtxt(TECHB_FOLDER / "relaxdata_10k.half.tsv.gz", delimiter="\t")
    settings = json.loads((TECHB_FOLDER / "settings.json").read_text())
    data = importers.load("relaxation", TECHB_FOLDER)
    r = data.relaxation
    assert data.g_max == settings["gmax"] == 128e-6 and data.technology == "techB" and "MIT" in data.licence
    assert r.time.tolist() == settings["times"]
    assert r.cell.size == np.unique(raw[:, 0]).size and np.isfinite(r.conductance).sum() == raw.shape[0]
    assert r.target_conductance.max() == pytest.approx((raw[:, 5].max() + 0.5) * 128e-6 / 32)
    assert r.target_conductance.max() > data.g_max  # cells programmed above g_max
    row = raw[777]
    i, k = np.searchsorted(r.cell, row[0]), np.searchsorted(r.time, row[6])
    assert r.conductance[i, k] == row[3]


def test_another_technology_held_out_spread_error_beats_the_quartic():
    """techB, half of its cells (the technology the calibration was not developed on): the held-out median
    spread error per time against the quartic fitted to the same fit half and scored on the same cells."""
    result = fitting.fit_measurements(importers.load("relaxation", TECHB_FOLDER), "techb")
    assert result.drift_model == "spread_table" and result.power_law_error > 1
    goodness = fitting.goodness(result.validation_profile, result.validation)
    median = np.nanmedian(np.abs(goodness.std_error()), axis=0)
    quartic = np.array([errors["polynomial"] for errors in result.selection.std_errors])
    # measured 4.4, 11.3, 7.9, 10.1, 14.5, 9.6, 9.3 % against the quartic's 4.4, 18.0, 25.3, 26.3, 27.6, 24.2,
    # 42.6 % (t = 0, 0.01, 0.1, 1, 100, 1000, 10000 s)
    assert np.all(median[1:] < 0.16) and median[0] < 0.06, median
    assert np.median(median) < 0.5 * np.median(quartic)
    assert np.all(median[1:] < quartic[1:])


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_relaxation_importer_bad_input(tmp_path):
    folder = tmp_path / "techX"
    shutil.copytree(TECHB_FOLDER, folder)
    source = folder / "relaxdata_10k.half.tsv.gz"
    lines = importers._open_text(source).read().splitlines()[:3000]
    before = digest(source)

    def write(name, rows):
        (folder / name).write_text("\n".join(rows) + "\n")
        return folder / name

    # several tables in the folder: the folder is ambiguous, a file is not
    other = write("relaxdata_extra.tsv", lines)
    with pytest.raises(SchemaError, match="needs exactly one relaxdata"):
        importers.load("relaxation", folder)
    assert importers.load("relaxation", other).relaxation.cell.size > 0
    other.unlink()
    # NaN rows and rows at times that settings.json does not list are counted and skipped
    nan_rows = [*lines, "99999\t0.0\t1\tnan\t1e-5\t2\t0.0", "99998\t5.0\t1\t1e-5\t1e-5\t2\t5.0"]
    data = importers.load("relaxation", write("relaxdata_nan.tsv", nan_rows))
    assert data.skipped == {
        "relaxation: rows with a non-finite value": 1,
        "relaxation: rows at a time not in settings.json times": 1,
    }
    # an unknown column layout, a g_max that disagrees with the level column
    wide = write("relaxdata_wide.tsv", [line + "\t0" for line in lines])
    with pytest.raises(SchemaError, match="8 columns; expected 7: addr, time, r, g, gi, range, timept"):
        importers.load("relaxation", wide)
    settings = json.loads((folder / "settings.json").read_text())
    (folder / "settings.json").write_text(json.dumps({**settings, "gmax": 40e-6}))
    with pytest.raises(SchemaError, match="range column disagrees with int"):
        importers.load("relaxation", wide.with_name("relaxdata_nan.tsv"))
    code, _, err = run_cli("convert", "relaxation", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o.h5"))
    assert code == 2 and "no such file or folder" in err and "Traceback" not in err
    assert digest(source) == before and not (tmp_path / "o.h5").exists()


def test_cli_converts_a_folder_and_reports_validation_goodness(tmp_path):
    code, out, err = run_cli("convert", "relaxation", str(TECHB_FOLDER), "-o", str(tmp_path / "b.h5"))
    assert code == 0 and "8195 cells at 7 times" in out, err
    code, out, err = run_cli("convert", "techc-relaxation", str(TECHB_FOLDER), "-o", str(tmp_path / "c.h5"))
    assert code == 0, err  # the old name is the same importer
    assert digest(tmp_path / "b.h5") == digest(tmp_path / "c.h5")
    code, out, err = run_cli("calibrate", str(tmp_path / "b.h5"), "-o", str(tmp_path / "b.json"), "--floor")
    assert code == 0, err
    rows = {line[:32].strip(): line[32:].split() for line in out.splitlines() if line.startswith("    ")}
    assert len(rows["floor: bootstrap"]) == len(rows["floor: split-half / sqrt 2"]) == 7  # one per time
    # the analytic floor of the noise-floor table is the one the goodness table prints (per time, percent)
    printed = next(line for line in out.splitlines() if line.startswith("  noise floor"))
    assert [float(v) for v in rows["floor: analytic"]] == pytest.approx(
        [float(v.strip().rstrip("%")) for v in printed.split("|")[1:]], abs=0.051
    )
