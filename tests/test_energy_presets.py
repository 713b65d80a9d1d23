"""The energy model against published silicon, leaving each chip out of the one fitted constant.

Six chips (crossbar.energy.validation.PUBLISHED, sources in each preset file). The shared constants are sourced;
one, ``adc_front_per_bit``, is fitted to silicon: fitted on all chips but one, it predicts the one left out.
Measured (benchmarks/energy_validation.py; docs/energy.md), within a point at batch 8 to 64: left-out errors 1%
(HERMES), 47% (IBM speech chip), 11% (NeuRRAM), 9% (22 nm ReRAM macro), 1% (7 nm SRAM macro), 17% (65 nm 1-bit
SRAM); median 10%, worst 47%. Asserted: median <= 15%, worst <= 50% (the issue's bound; the IBM chip is 3 points
inside it), HERMES within 10% of both its published figures. docs/energy.md lists the modelling choices made on
these same chips, which the leave-one-out does not cover.
"""

import statistics

import pytest

from crossbar import ChipConfig, EnergyConstants
from crossbar.energy.validation import HERMES_CORE, PUBLISHED, chip_line, full_tile_workload, leave_one_out

BATCH = 16


@pytest.fixture(scope="module")
def rows():
    return {row["preset"]: row for row in leave_one_out([chip_line(p, batch=BATCH) for p in PUBLISHED])}


def test_validation_set_has_six_chips_with_sources():
    assert len({p.preset for p in PUBLISHED}) >= 6
    for published in PUBLISHED:
        chip = ChipConfig.preset(published.preset)
        assert "et al." in chip.energy.source and "not found" in chip.energy.source.lower(), published.preset


def test_leave_one_out_median_within_15_and_worst_within_50_percent(rows):
    errors = {name: row["left_out_error"] for name, row in rows.items()}
    print({name: f"{e:.0%}" for name, e in errors.items()})
    assert statistics.median(errors.values()) <= 0.15
    assert max(errors.values()) <= 0.50


def test_hermes_left_out_within_10_percent_of_both_published_figures(rows):
    """No constant is fitted to HERMES here: the fit is on the five other chips (the issue asks for 25%)."""
    row = rows["hermes"]
    assert row["left_out"] == pytest.approx(row["published"], rel=0.10)
    assert row["left_out"] == pytest.approx(HERMES_CORE.tops_per_watt, rel=0.10)


def test_left_out_fit_differs_from_the_in_sample_fit_and_is_used(rows):
    """The prediction left out uses a constant the chip did not see (else the check would be in-sample)."""
    assert any(row["k_left_out"] != row["k_all"] for row in rows.values())
    for row in rows.values():
        assert row["in_sample"] > 0 and row["left_out"] > 0


def test_shipped_constant_is_the_all_chip_fit(rows):
    shipped = EnergyConstants().adc_front_per_bit
    assert shipped == pytest.approx(next(iter(rows.values()))["k_all"], rel=0.05)


def test_hermes_core_throughput_within_25_percent_of_published():
    """63.1 TOPS on 64 cores: one 256x256 8-bit MVM per core every ~133 ns (PWM inputs at 1 GHz)."""
    published = next(p for p in PUBLISHED if p.tops_per_tile is not None)
    ours = full_tile_workload(ChipConfig.preset(published.preset), batch=BATCH).tops
    assert ours == pytest.approx(published.tops_per_tile, rel=0.25)
