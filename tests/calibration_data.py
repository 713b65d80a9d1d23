"""Paths of the measured RRAM data the calibration tests read: techC and techA in ../shared/data relative to
the repo root, and half of techB's cells shipped in tests/data (the technology the calibration was not
developed on; tests/data/rram-relaxation/README.md)."""

from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rram-relaxation"
TECHC = DATA / "techC" / "relaxdata.min.tsv.gz"
TECHA = DATA / "techA" / "tsdata.min.tsv.gz"
TECHB_FOLDER = Path(__file__).resolve().parent / "data" / "rram-relaxation" / "techB"
