"""Write the crossbar circuit of crossbar/irdrop.py as a SPICE netlist and solve it with ngspice.

The independent circuit reference for the IR-drop model: nothing here uses crossbar's own solvers.
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np

NGSPICE = shutil.which("ngspice")


def netlist(conductances: np.ndarray, voltages: np.ndarray, r_wl: float, r_bl: float) -> str:
    """One operating point: drivers V[i] on the word lines' left ends, 0 V sources as the sense amplifiers."""
    rows, cols = conductances.shape
    lines = ["crossbar array"]
    for i in range(rows):
        lines.append(f"VIN{i} in{i} 0 DC {voltages[i]:.17g}")
        lines.append(f"RWD{i} in{i} w{i}_0 {r_wl:.17g}")
        for j in range(cols - 1):
            lines.append(f"RW{i}_{j} w{i}_{j} w{i}_{j + 1} {r_wl:.17g}")
        for j in range(cols):
            if conductances[i, j] > 0:  # a cell at 0 S is an open circuit
                lines.append(f"RC{i}_{j} w{i}_{j} b{i}_{j} {1.0 / conductances[i, j]:.17g}")
    for j in range(cols):
        for i in range(rows - 1):
            lines.append(f"RB{i}_{j} b{i}_{j} b{i + 1}_{j} {r_bl:.17g}")
        lines.append(f"RBS{j} b{rows - 1}_{j} s{j} {r_bl:.17g}")
        lines.append(f"VS{j} s{j} 0 DC 0")
    probes = " ".join(f"i(VS{j})" for j in range(cols))
    lines += [
        ".options reltol=1e-12 abstol=1e-24 vntol=1e-18",
        ".control",
        "op",
        "set wr_singlescale",
        "set numdgt=17",
        f"wrdata out.txt {probes}",
        "quit",
        ".endc",
        ".end",
    ]
    return "\n".join(lines) + "\n"


def ngspice_currents(
    conductances: np.ndarray, voltages: np.ndarray, r_wl: float, r_bl: float, workdir: Path
) -> np.ndarray:
    """Amplifier currents (batch, C), amperes, for voltages (batch, R), one ngspice operating point each."""
    results = []
    for k, v in enumerate(np.atleast_2d(voltages)):
        folder = workdir / f"op{k}"
        folder.mkdir()
        (folder / "array.cir").write_text(netlist(conductances, v, r_wl, r_bl))
        subprocess.run([NGSPICE, "-b", "array.cir"], cwd=folder, capture_output=True, check=True, timeout=600)
        values = np.array((folder / "out.txt").read_text().split(), dtype=np.float64)
        results.append(values[1:])  # the first column is the (unused) scale vector of the operating point
    return np.array(results)
