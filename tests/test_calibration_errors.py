"""Bad measurement input gets a clear error, never a traceback, and nothing is modified or half-written."""

import hashlib
import shutil

import h5py
import numpy as np
import pytest
from test_cli import run_cli

from calibration import importers, read
from calibration.schema import Measurements, Relaxation, SchemaError, write


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_csv(path, rows, header="cell,target_conductance,time,conductance"):
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in row) for row in rows) + "\n")


@pytest.fixture
def good_h5(tmp_path):
    """A small valid file: 3 levels x 30 cells, read at 0, 1 and 10 s (seeded synthetic data)."""
    rng = np.random.default_rng(0)
    targets = np.repeat([5e-6, 10e-6, 20e-6], 30)
    rows = [
        (cell, target, t, target * (1 - 0.01 * np.log1p(t)) + 0.3e-6 * rng.standard_normal())
        for t in (0.0, 1.0, 10.0)
        for cell, target in enumerate(targets)
    ]
    write_csv(tmp_path / "good.csv", rows)
    importers.convert("csv", tmp_path / "good.csv", tmp_path / "good.h5", g_max=25e-6)
    return tmp_path / "good.h5"


def edited_copy(source, target, edit):
    shutil.copy(source, target)
    with h5py.File(target, "r+") as h5:
        edit(h5)
    return target


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h5: h5.__delitem__("device"), "/device: missing group"),
        (
            lambda h5: h5["relaxation/conductance"].attrs.__setitem__("units", "uS"),
            "units attribute is 'uS', expected 'S'",
        ),
        (lambda h5: h5["relaxation/time"].attrs.__delitem__("units"), "/relaxation/time: units attribute is '<none>'"),
        (lambda h5: h5["programming"].__delitem__("time"), "/programming/time: missing dataset"),
        (lambda h5: h5.attrs.__setitem__("schema_version", 7), "schema_version 7 is not supported"),
        (
            lambda h5: (h5.__delitem__("programming"), h5.__delitem__("relaxation")),
            "no programming, relaxation or read_noise group",
        ),
    ],
)
def test_reader_names_what_is_missing_or_malformed(good_h5, tmp_path, edit, message):
    bad = edited_copy(good_h5, tmp_path / "bad.h5", edit)
    before = digest(bad)
    with pytest.raises(SchemaError, match=message):
        read(bad)
    assert digest(bad) == before, "the reader must not modify its input"


def test_empty_and_misshapen_datasets(good_h5, tmp_path):
    def empty(h5):
        del h5["programming/conductance"]
        h5["programming"].create_dataset("conductance", data=np.zeros(0)).attrs["units"] = "S"

    with pytest.raises(SchemaError, match="/programming/conductance: is empty"):
        read(edited_copy(good_h5, tmp_path / "empty.h5", empty))

    def short(h5):
        del h5["relaxation/target_conductance"]
        h5["relaxation"].create_dataset("target_conductance", data=np.ones(5)).attrs["units"] = "S"

    with pytest.raises(SchemaError, match="target_conductance: has 5 rows, expected 90"):
        read(edited_copy(good_h5, tmp_path / "short.h5", short))


def test_nan_rows_are_skipped_and_counted(good_h5, tmp_path):
    def holes(h5):
        h5["programming/conductance"][:4] = np.nan
        h5["relaxation/conductance"][0, :] = np.nan  # a cell never read
        h5["relaxation/conductance"][1, 2] = np.nan

    data = read(edited_copy(good_h5, tmp_path / "nan.h5", holes))
    assert data.programming.cell.size == 86
    assert data.skipped["programming: rows with a non-finite value"] == 4
    assert data.skipped["relaxation: cells without a finite target or any finite read"] == 1
    assert data.skipped["relaxation: reads not measured or non-finite (NaN)"] == 1
    code, out, err = run_cli("calibrate", str(tmp_path / "nan.h5"), "-o", str(tmp_path / "p.json"))
    assert code == 0, err
    assert "rows with a non-finite value: 4" in out


def test_csv_nan_rows_are_skipped_and_counted(tmp_path):
    rows = [(c, 1e-5, t, 1e-5 + 1e-7 * c) for t in (0.0, 5.0) for c in range(25)]
    rows += [(99, 1e-5, 0.0, "nan"), (98, "", 0.0, 1e-5), (97, 1e-5, 5.0, "x")]
    write_csv(tmp_path / "m.csv", rows)
    code, out, err = run_cli("convert", "csv", str(tmp_path / "m.csv"), "-o", str(tmp_path / "m.h5"))
    assert code == 0, err
    assert "rows with a missing or non-numeric value: 3" in out
    assert read(tmp_path / "m.h5").relaxation.cell.size == 25


def test_not_hdf5_and_truncated_files(good_h5, tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("cell,target\n1,2\n")
    with pytest.raises(SchemaError, match="not an HDF5 file"):
        read(text)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good_h5.read_bytes()[: good_h5.stat().st_size // 2])
    with pytest.raises(SchemaError, match="truncated|not an HDF5 file"):
        read(truncated)
    for path in (text, truncated, tmp_path / "missing.h5"):
        code, _, err = run_cli("calibrate", str(path), "-o", str(tmp_path / "out.json"))
        assert code == 2 and "crossbar calibrate: error:" in err and "Traceback" not in err, err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ("cell,time,conductance\n1,0,1e-5\n", "header lacks column"),
        ("cell,target_conductance,time,conductance\n", "no row with four finite numbers"),
        ("cell,target_conductance,time,conductance\n1,1e-5,0,1e-5\n1,2e-5,1,1e-5\n", "more than one target"),
        ("cell,target_conductance,time,conductance\n1,1e-5,0,1e-5\n1,1e-5,0,2e-5\n", "read more than once"),
        ("cell,target_conductance,time,conductance\n1.5,1e-5,0,1e-5\n", "integer cell ids"),
        ("cell,target_conductance,time,conductance\n1,1e-5,-1,1e-5\n", "negative time"),
    ],
)
def test_bad_csv_is_refused_and_nothing_is_written(tmp_path, content, message):
    source = tmp_path / "in.csv"
    source.write_text(content)
    previous = tmp_path / "out.h5"
    previous.write_bytes(b"an earlier result")
    before = digest(source)
    code, _, err = run_cli("convert", "csv", str(source), "-o", str(previous))
    assert code == 2 and message in err and "Traceback" not in err, err
    assert digest(source) == before
    assert previous.read_bytes() == b"an earlier result"  # an existing output is left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.h5"]  # no temporary file left


def test_convert_errors_on_lab_formats(tmp_path):
    garbage = tmp_path / "relaxdata.min.tsv.gz"
    garbage.write_bytes(b"\x1f\x8b not really gzip")
    (tmp_path / "settings.json").write_text('{"gmax": 4e-5, "fs": 400}')
    for fmt in ("techc-relaxation", "techa-read-noise"):
        code, _, err = run_cli("convert", fmt, str(garbage), "-o", str(tmp_path / "o.h5"))
        assert code == 2 and "Traceback" not in err and str(garbage) in err, err
    (tmp_path / "settings.json").unlink()
    code, _, err = run_cli("convert", "techc-relaxation", str(garbage), "-o", str(tmp_path / "o.h5"))
    assert code == 2 and "no settings.json" in err
    (tmp_path / "settings.json").write_text('{"fs": 400}')
    code, _, err = run_cli("convert", "techc-relaxation", str(garbage), "-o", str(tmp_path / "o.h5"))
    assert code == 2 and "needs numbers gmax" in err, err
    code, _, err = run_cli("convert", "csv", str(garbage), "-o", str(garbage))
    assert code == 2 and "overwrite the input" in err
    code, _, err = run_cli("convert", "csv", str(garbage), "-o", str(tmp_path / "o.h5"), "--g-max", "-1")
    assert code == 2 and "g_max: must be a positive number" in err
    assert not (tmp_path / "o.h5").exists()


def test_cli_convert_calibrate_and_plot(good_h5, tmp_path):
    code, out, err = run_cli(
        "calibrate", str(good_h5), "-o", str(tmp_path / "p.json"), "--plot", str(tmp_path / "fit.png"), "--order", "2"
    )
    assert code == 0, err
    assert "median |error|" in out and "t = 10 s" in out
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli("calibrate", str(good_h5), "-o", str(tmp_path / "missing-dir" / "p.json"))
    assert code == 2 and "Traceback" not in err


@pytest.mark.parametrize(
    "edit, message",
    [
        (  # microsiemens labelled siemens: 1e6 times too large
            lambda h5: h5["relaxation/conductance"].write_direct(h5["relaxation/conductance"][()] * 1e6),
            r"/relaxation/conductance: 270 value\(s\) above",
        ),
        (
            lambda h5: h5["programming/conductance"].__setitem__(0, -5e-6),  # -20 % of g_max: not read noise
            r"/programming/conductance: 1 value\(s\) below",
        ),
        (lambda h5: h5["device/g_max"].write_direct(np.array(2.0)), "/device/g_max: must be .* up to 1 S"),
        (lambda h5: h5["relaxation/time"].write_direct(np.array([0.0, 10.0, 1.0])), "strictly increasing"),
    ],
)
def test_values_outside_the_physical_range_of_their_unit_are_refused(good_h5, tmp_path, edit, message):
    bad = edited_copy(good_h5, tmp_path / "bad.h5", edit)
    with pytest.raises(SchemaError, match=message):
        read(bad)
    code, _, err = run_cli("calibrate", str(bad), "-o", str(tmp_path / "p.json"))
    assert code == 2 and str(bad) in err and "Traceback" not in err, err
    assert not (tmp_path / "p.json").exists()


def test_reads_slightly_below_zero_are_read_noise(good_h5, tmp_path):
    """An off-state read at -1 % of g_max (the techC data go to -0.3 %) is within the noise floor."""
    edited = edited_copy(good_h5, tmp_path / "low.h5", lambda h5: h5["programming/conductance"].__setitem__(0, -2.5e-7))
    assert read(edited).programming.conductance.min() == -2.5e-7


def test_convert_refuses_microsiemens_labelled_siemens(tmp_path):
    rows = [(c, 1e-5 * (1 + c % 3), t, 1e-5 * (1 + c % 3)) for t in (0.0, 5.0) for c in range(30)]
    write_csv(tmp_path / "ok.csv", rows)
    write_csv(tmp_path / "micro.csv", [(c, target * 1e6, t, g * 1e6) for c, target, t, g in rows])
    assert run_cli("convert", "csv", str(tmp_path / "ok.csv"), "-o", str(tmp_path / "ok.h5"))[0] == 0
    code, _, err = run_cli("convert", "csv", str(tmp_path / "micro.csv"), "-o", str(tmp_path / "micro.h5"))
    assert code == 2 and "/relaxation/target_conductance" in err and "above 1 S" in err, err
    assert not (tmp_path / "micro.h5").exists()


def test_writer_refuses_times_out_of_order(tmp_path):
    """What any importer hands to the schema is checked before a byte is written."""
    relaxation = Relaxation(
        cell=np.arange(2),
        target_conductance=np.array([1e-5, 2e-5]),
        time=np.array([0.0, 100.0, 10.0]),
        conductance=np.full((2, 3), 1.5e-5),
    )
    measurements = Measurements("t", 2e-5, "synthetic", "", relaxation=relaxation)
    with pytest.raises(SchemaError, match="out.h5: not written: /relaxation/time: .*strictly increasing"):
        write(tmp_path / "out.h5", measurements)
    assert list(tmp_path.iterdir()) == []
