#!/usr/bin/env python
"""Energy model against published silicon: predicted vs published TOPS/W per chip, in-sample and left out.

Each validation chip (crossbar.energy.validation.PUBLISHED) runs its full-tile workload at its published
precision. The one constant fitted to silicon, ``adc_front_per_bit``, is fitted on all chips (in-sample) and on
all chips but one, which it then predicts (left out). Prints the table with median and worst relative error and
writes it, with every chip's energy by component, to benchmarks/results/energy_validation.json.

    python benchmarks/energy_validation.py [--batch 64] [--out benchmarks/results/energy_validation.json]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from common import configure_threads, machine_info, write_json_atomic

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "energy_validation.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="MVMs per chip workload")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threading = configure_threads(1, "default")

    from crossbar import ChipConfig
    from crossbar.energy.constants import EnergyConstants
    from crossbar.energy.validation import (
        FITTED,
        HERMES_CORE,
        PUBLISHED,
        chip_line,
        full_tile_workload,
        leave_one_out,
    )

    lines = [chip_line(published, batch=args.batch) for published in PUBLISHED]
    rows = leave_one_out(lines)
    fitted = rows[0]["k_all"]
    constants = EnergyConstants().replace(**{FITTED: fitted})
    breakdown = {}
    for published in PUBLISHED:
        report = full_tile_workload(ChipConfig.preset(published.preset), args.batch, constants=constants)
        breakdown[published.preset] = {
            "tops_per_watt_chip": report.tops_per_watt,
            "tops_per_tile": report.tops,
            "energy_by_component_J": report.by_component,
            "ops": report.ops,
        }
    summary = {
        f"{kind}_{stat}": fn(row[f"{kind}_error"] for row in rows)
        for kind in ("in_sample", "left_out")
        for stat, fn in (("median", statistics.median), ("worst", max))
    }
    header = f"{'chip':<20} {'scope':<6} {'published':>10} {'in-sample':>10} {'err':>6} {'left out':>10} {'err':>6}"
    print(f"fitted constant {FITTED}: {fitted:.3g} J (all chips); TOPS/W:")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['preset']:<20} {row['scope']:<6} {row['published']:>10.4g} {row['in_sample']:>10.4g} "
            f"{row['in_sample_error']:>6.0%} {row['left_out']:>10.4g} {row['left_out_error']:>6.0%}"
        )
    print(
        f"median error: in-sample {summary['in_sample_median']:.0%}, left out {summary['left_out_median']:.0%}; "
        f"worst: in-sample {summary['in_sample_worst']:.0%}, left out {summary['left_out_worst']:.0%}"
    )
    core = breakdown["hermes"]["tops_per_watt_chip"]
    print(f"HERMES core (in-sample): {core:.3g} TOPS/W vs {HERMES_CORE.tops_per_watt} ({HERMES_CORE.citation})")
    write_json_atomic(
        args.out,
        {
            "fitted_constant": FITTED,
            "fitted_value_all_chips": fitted,
            "batch": args.batch,
            "chips": rows,
            "summary": summary,
            "breakdown": breakdown,
            "citations": {p.preset: p.citation for p in PUBLISHED},
            "machine": machine_info(threading),
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
