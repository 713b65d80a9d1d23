"""Monte-Carlo sweeps on dask: spec validation, cluster = serial, a killed worker, reruns, a killed client."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client
from scipy import stats
from test_cli import run_cli

import crossbar
from crossbar.config import ConfigError
from crossbar.sweep import SpecError, expand, load_spec, local_cluster, parse_spec, run_sweep, summarize
from crossbar.sweep.runner import single_threaded
from crossbar.sweep.store import writer_lock
from models import demo
from models.data import digits_split

HERE = Path(__file__).resolve().parent
FAST_CHIP = {"name": "fast", "wires": {"r_wl": 0.0, "r_bl": 0.0}}  # no IR drop: compiles in a fraction of a second


def spec_dict(seeds=2, workload="digits-mlp", bits=(4, 8)):
    return {
        "name": "t",
        "workloads": [workload],
        "chips": [FAST_CHIP],
        "parameters": {"adc.bits": list(bits)},
        "seeds": seeds,
    }


@pytest.fixture(scope="module")
def client():
    with local_cluster(2) as cluster, Client(cluster) as dask_client:
        yield dask_client


def by_point(path):
    frame = pd.read_parquet(path)
    return {(row["adc.bits"], row["seed"]): row["metric"] for _, row in frame.iterrows()}


def test_bad_specs_fail_before_any_work(tmp_path):
    marker = tmp_path / "built"
    touch = {"name": f"{HERE / 'sweep_workloads.py'}:digits_mlp_touch", "args": {"marker": str(marker)}}
    cases = [
        ({**spec_dict(workload=touch), "chip": ["default"]}, "chip: unknown key"),
        (spec_dict(workload=touch, bits=[]), "parameters.adc.bits: empty list"),
        (spec_dict(workload=touch, seeds=0), "seeds: a count must be at least 1"),
        ({**spec_dict(workload=touch), "chips": ["nope"]}, "unknown preset 'nope'"),
        ({**spec_dict(workload=touch), "chips": ["missing.json"]}, "no such chip file"),
        (spec_dict(workload="resnet-9000"), "unknown workload 'resnet-9000'"),
        (spec_dict(workload=f"{HERE / 'sweep_workloads.py'}:nothing"), "has no function 'nothing'"),
        (spec_dict(workload="no_such_package.models:build"), "cannot be imported"),
        ({**spec_dict(workload=touch), "parameters": {"adc.bitz": [4]}}, "unknown chip field"),
        (spec_dict(workload=touch, bits=[4, 40]), "adc.bits: must be an integer from 2 to 24"),
        (spec_dict(workload=touch, bits=[4, 4]), "duplicate values"),
        (spec_dict(workload={"name": "digits-mlp", "args": {"hidden": 3}}), "do not fit"),
    ]
    for data, message in cases:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(data))
        with pytest.raises(SpecError, match=message):
            expand(load_spec(path))
        code, out, err = run_cli("sweep", str(path), "--workers", "2", "--no-progress")
        assert code == 2 and message.split("'")[0] in err and "Traceback" not in err, err
    assert not marker.exists(), "a workload was built for a bad spec"
    assert not (tmp_path / "bad.parquet").exists()
    (tmp_path / "bad.yaml").write_text("workloads: [digits-mlp\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")


def test_two_worker_cluster_gives_the_serial_numbers(tmp_path, client):
    spec = parse_spec(spec_dict())
    serial = run_sweep(spec, tmp_path / "serial.parquet", progress=False)
    parallel = run_sweep(spec, tmp_path / "parallel.parquet", client, progress=False)
    assert serial.computed == parallel.computed == 4 and not serial.failures and not parallel.failures
    a, b = pd.read_parquet(tmp_path / "serial.parquet"), pd.read_parquet(tmp_path / "parallel.parquet")
    assert b["worker"].nunique() == 2, "both workers should have run points"
    merged = a.merge(b, on="key", suffixes=("_serial", "_cluster"))
    assert len(merged) == 4
    assert (merged["metric_serial"] == merged["metric_cluster"]).all()
    assert (merged["energy_j_serial"] == merged["energy_j_cluster"]).all() and (merged["energy_j_serial"] > 0).all()
    assert (merged["config_serial"] == merged["config_cluster"]).all()
    # Independent reference: compile and evaluate one point by hand.
    model, (_, _, x, y) = demo.load_model(), digits_split()
    chip = crossbar.ChipConfig.from_dict(FAST_CHIP).replace(adc={"bits": 4})
    with single_threaded():
        expected = demo.accuracy(crossbar.compile(model, chip, seed=1), x, y)
    assert by_point(tmp_path / "parallel.parquet")[(4, 1)] == expected
    config = b[(b["seed"] == 1) & (b["adc.bits"] == 4)]["config"].iloc[0]
    assert json.loads(config) == {"workload": {"name": "digits-mlp", "args": {}}, "chip": chip.to_dict(), "seed": 1}


def test_a_killed_worker_loses_nothing_and_its_point_is_retried(tmp_path, client):
    marker = tmp_path / "died"
    dies = {"name": f"{HERE / 'sweep_workloads.py'}:digits_mlp_dies_once", "args": {"marker": str(marker)}}
    spec = parse_spec(spec_dict(seeds=3, workload=dies))
    pids_before = set(client.run(os.getpid).values())
    run = run_sweep(spec, tmp_path / "results.parquet", client, progress=False)
    assert marker.exists(), "no worker was killed"
    assert set(client.run(os.getpid).values()) != pids_before, "the nanny should have restarted the dead worker"
    assert run.computed == 6 and not run.failures
    frame = pd.read_parquet(tmp_path / "results.parquet")
    assert sorted(frame["key"]) == sorted(p.key for p in run.points)
    serial = run_sweep(parse_spec(spec_dict(seeds=3)), tmp_path / "serial.parquet", progress=False)
    assert serial.computed == 6
    assert by_point(tmp_path / "results.parquet") == by_point(tmp_path / "serial.parquet")


def test_rerun_skips_finished_points(tmp_path):
    path = tmp_path / "results.parquet"
    first = run_sweep(parse_spec(spec_dict(seeds=2, bits=[6])), path, progress=False)
    before = pd.read_parquet(path)
    again = run_sweep(parse_spec(spec_dict(seeds=2, bits=[6])), path, progress=False)
    grown = run_sweep(parse_spec(spec_dict(seeds=3, bits=[6])), path, progress=False)
    assert (first.computed, again.computed, again.skipped, grown.computed, grown.skipped) == (2, 0, 2, 1, 2)
    after = pd.read_parquet(path)
    assert len(after) == 3 and after["key"].is_unique
    pd.testing.assert_frame_equal(after.iloc[:2], before)
    (tmp_path / "notes.parquet").write_text("not a table")
    for bad, message in [(tmp_path / "notes.parquet", "not a readable Parquet"), (tmp_path, "is a folder")]:
        with pytest.raises(ConfigError, match=message):
            run_sweep(parse_spec(spec_dict(seeds=1, bits=[6])), bad, progress=False)
    assert (tmp_path / "notes.parquet").read_text() == "not a table"


def test_a_second_sweep_on_the_same_results_file_stops_before_any_work(tmp_path):
    path = tmp_path / "results.parquet"
    run_sweep(parse_spec(spec_dict(seeds=1, bits=[6])), path, progress=False)
    before = path.read_bytes()
    with writer_lock(path):  # another sweep is writing this file
        with pytest.raises(ConfigError, match="another sweep is writing"):
            run_sweep(parse_spec(spec_dict(seeds=2, bits=[6])), path, progress=False)
        run_sweep(parse_spec(spec_dict(seeds=1, bits=[6])), tmp_path / "other.parquet", progress=False)
    assert path.read_bytes() == before
    grown = run_sweep(parse_spec(spec_dict(seeds=2, bits=[6])), path, progress=False)  # the lock was released
    assert (grown.computed, grown.skipped) == (1, 1)
    assert not (tmp_path / ".results.parquet.lock").exists(), "a clean exit removes the lock file"
    with pytest.raises(RuntimeError), writer_lock(path):
        assert (tmp_path / ".results.parquet.lock").exists()
        raise RuntimeError("a failing sweep")
    assert not (tmp_path / ".results.parquet.lock").exists()
    (tmp_path / ".results.parquet.lock").touch()  # left by a killed sweep: no obstacle, and removed after
    assert run_sweep(parse_spec(spec_dict(seeds=2, bits=[6])), path, progress=False).skipped == 2
    assert not (tmp_path / ".results.parquet.lock").exists()


def test_a_killed_client_leaves_a_readable_file_and_the_rerun_completes(tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec_dict(seeds=4, bits=[3, 5, 8])))
    results = tmp_path / "spec.parquet"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    command = [sys.executable, "-m", "crossbar.cli", "sweep", str(spec_path), "--workers", "0", "--no-progress"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not results.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    written = pd.read_parquet(results)
    assert 1 <= len(written) < 12, "the client should have been killed mid-sweep"
    code, out, err = run_cli(
        "sweep", str(spec_path), "--workers", "0", "--no-progress", "--plot", str(tmp_path / "p.png")
    )
    assert code == 0, err
    assert f"{len(written)} already in" in out and f"{12 - len(written)} computed" in out
    final = pd.read_parquet(results)
    assert len(final) == 12 and final["key"].is_unique
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_summary_mean_and_confidence_interval(tmp_path):
    spec = parse_spec(spec_dict(seeds=3, bits=[4]))
    run_sweep(spec, tmp_path / "r.parquet", progress=False)
    frame = pd.read_parquet(tmp_path / "r.parquet")
    table = summarize(frame, expand(spec))
    values = frame["metric"].to_numpy()
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert table["n"].tolist() == [3]
    assert math.isclose(table["mean"].iloc[0], values.mean())
    assert math.isclose(table["ci95"].iloc[0], (high - low) / 2)


def test_shipped_example_specs_are_valid():
    folder = HERE.parent / "benchmarks" / "sweeps"
    sizes = {path.name: len(expand(load_spec(path))) for path in sorted(folder.glob("*.yaml"))}
    assert sizes == {"adc_bits.yaml": 40, "drift_noise.yaml": 80}
