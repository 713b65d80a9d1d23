"""Paths of the measured RRAM data the calibration tests read (../shared/data relative to the repo root)."""

from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rram-relaxation"
TECHC = DATA / "techC" / "relaxdata.min.tsv.gz"
TECHA = DATA / "techA" / "tsdata.min.tsv.gz"
