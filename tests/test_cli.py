"""The command line: crossbar map and crossbar demo, and their errors."""

import contextlib
import io
import json
import subprocess

import numpy as np
import torch
from torch import nn

from crossbar import cli
from models import demo


def run_cli(*args):
    """Run the command line in this process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_map_prints_table_and_json(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(nn.Sequential(nn.Linear(300, 40), nn.ReLU(), nn.Linear(40, 3)), path)
    before = path.read_bytes()
    code, table, err = run_cli("map", str(path))
    assert code == 0, err
    assert "2x1" in table and "ReLU" in table
    data = json.loads(run_cli("map", str(path), "--chip", "ideal", "--json")[1])
    assert data["chip"] == "ideal" and data["analog_tiles"] == 3
    assert path.read_bytes() == before, "the input file must not be modified"


def test_map_with_a_chip_file_and_bad_inputs(tmp_path):
    chip_path = tmp_path / "chip.json"
    chip_path.write_text(json.dumps({"name": "small", "tile": {"rows": 64, "cols": 64}}))
    model_path = tmp_path / "model.pt"
    torch.save(nn.Sequential(nn.Linear(100, 100)), model_path)
    data = json.loads(run_cli("map", str(model_path), "--chip", str(chip_path), "--json")[1])
    assert data["tile"] == [64, 64] and data["layers"][0]["tile_grid"] == [2, 2]
    torch.save(nn.Sequential(nn.Linear(3, 3)).state_dict(), tmp_path / "state.pt")
    for args, message in [
        (("map", str(tmp_path / "missing.pt")), "no such file"),
        (("map", str(tmp_path / "state.pt")), "not a torch module"),
        (("map", str(chip_path)), "not a torch file"),
        (("map", str(model_path), "--chip", "nope"), "unknown preset"),
    ]:
        code, _, err = run_cli(*args)
        assert code == 2 and message in err, err
        assert "Traceback" not in err


def test_demo_keeps_accuracy_on_the_default_chip():
    result, mapping = demo.run(instances=3)
    text = demo.format_result(result, "default")
    n, p = result.test_size, result.float_accuracy
    assert f"{p:.2%} +- {(p * (1 - p) / n) ** 0.5:.2%} sampling error of {n} digits" in text
    acc = np.array(result.chip_accuracies)
    assert f"{acc.mean():.2%} +- {acc.std():.2%} std over 3 instances" in text and "is noise" in text
    assert result.float_accuracy > 0.95
    assert abs(result.ideal_accuracy - result.float_accuracy) < 1e-9
    assert min(result.chip_accuracies) > result.float_accuracy - 0.03
    assert mapping.analog_tiles == 5
    assert result.energy.ops == 2 * (64 * 300 + 300 * 100 + 100 * 10) and result.energy.tops_per_watt > 0


def test_demo_console_script_runs():
    result = subprocess.run(["crossbar", "demo", "--instances", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "float" in result.stdout and "chip default" in result.stdout and "TOPS/W" in result.stdout


def test_estimate_prints_table_json_and_plot(tmp_path):
    path = tmp_path / "model.pt"
    torch.manual_seed(0)
    torch.save(nn.Sequential(nn.Linear(64, 40), nn.ReLU(), nn.Linear(40, 3)), path)
    code, table, err = run_cli("estimate", str(path), "--input-shape", "4,64", "--chip", "default")
    assert code == 0, err
    assert "TOPS/W" in table and "chip default" in table
    inputs = tmp_path / "x.pt"
    torch.save(torch.rand(2, 64, generator=torch.Generator().manual_seed(0)), inputs)
    plot = str(tmp_path / "e.png")
    code, out, err = run_cli("estimate", str(path), "--inputs", str(inputs), "--json", "--plot", plot)
    assert code == 0, err
    data = json.loads(out)
    assert data["batch"] == 2 and data["ops_per_inference"] == 2 * (64 * 40 + 40 * 3)
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    constants = tmp_path / "constants.json"
    constants.write_text(json.dumps({"sram_64bit": -1}))
    for args, message in [
        (("estimate", str(path)), "give example inputs"),
        (("estimate", str(path), "--input-shape", "4,x"), "comma-separated integers"),
        (("estimate", str(path), "--inputs", str(tmp_path / "none.pt")), "no such file"),
        (("estimate", str(path), "--input-shape", "4,64", "--chip", "nope"), "unknown preset"),
        (("estimate", str(path), "--input-shape", "4,64", "--constants", str(constants)), "sram_64bit"),
    ]:
        code, _, err = run_cli(*args)
        assert code == 2 and message in err, err
        assert "Traceback" not in err
