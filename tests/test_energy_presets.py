"""Chip presets against published silicon, on the workload each paper measured (full-tile 8-bit MVMs).

The energy constants are shared by every preset and none was tuned to a chip. Measured (docs/energy.md):
the IBM speech chip within 6% (13.1 vs 12.4 TOPS/W; its published 0.3 V read voltage, the read current drawn
from the supply), the HERMES core's MVM time within a few percent but its energy efficiency 1.9-2.0x too high
(the modelled periphery is a lower bound: it omits the ADCs' analog front ends, clocking, control and leakage).
"""

import pytest

from crossbar import ChipConfig
from crossbar.energy.validation import PUBLISHED, full_tile_workload

_REPORTS = {}


def report_for(preset):
    if preset not in _REPORTS:
        _REPORTS[preset] = full_tile_workload(ChipConfig.preset(preset))
    return _REPORTS[preset]


NOT_MET = pytest.mark.xfail(
    strict=True,
    reason="not met for HERMES: with shared, untuned constants the model is 1.9-2.0x more efficient (docs/energy.md)",
)


def _marks(published):
    return [NOT_MET] if published.preset == "hermes" else []


@pytest.mark.parametrize(
    "published", [pytest.param(p, marks=_marks(p), id=f"{p.preset}-{p.tops_per_watt}") for p in PUBLISHED]
)
def test_preset_tops_per_watt_within_25_percent_of_published(published):
    ours = report_for(published.preset).tops_per_watt
    print(f"{published.preset}: ours {ours:.3g} TOPS/W, published {published.tops_per_watt} ({published.citation})")
    assert ours == pytest.approx(published.tops_per_watt, rel=0.25)


@pytest.mark.parametrize("published", PUBLISHED, ids=lambda p: p.preset)
def test_preset_efficiency_exceeds_the_silicons(published):
    """The model leaves out whole classes of cost (bias, clocking, control, leakage): the silicon cannot beat it."""
    ours = report_for(published.preset).tops_per_watt
    print(f"{published.preset}: ours {ours:.3g} TOPS/W, published {published.tops_per_watt} ({published.citation})")
    assert ours > published.tops_per_watt


def test_hermes_core_throughput_within_25_percent_of_published():
    """63.1 TOPS on 64 cores: one 256x256 8-bit MVM per core every ~133 ns (PWM inputs at 1 GHz)."""
    published = next(p for p in PUBLISHED if p.tops_per_tile is not None)
    ours = report_for(published.preset).tops
    print(f"hermes core: ours {ours:.3g} TOPS, published {published.tops_per_tile:.3g} TOPS")
    assert ours == pytest.approx(published.tops_per_tile, rel=0.25)
