"""Paths of the measured RRAM data the calibration tests read: techC and techA in the shared data folder
(``$CROSSBAR_DATA``, else ../shared/data beside the repository: ``models.data.data_dir``), and half of
techB's cells shipped in tests/data (the technology the calibration was not developed on;
tests/data/rram-relaxation/README.md)."""

from pathlib import Path

from models.data import data_dir

DATA = data_dir() / "rram-relaxation"
TECHC = DATA / "techC" / "relaxdata.min.tsv.gz"
TECHA = DATA / "techA" / "tsdata.min.tsv.gz"
TECHB_FOLDER = Path(__file__).resolve().parent / "data" / "rram-relaxation" / "techB"
