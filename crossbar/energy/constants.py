"""Energy constants shared by every chip, each with its source (docs/energy.md has the table).

Chip presets hold only a chip's own published parameters (``crossbar.config.EnergyConfig``); the per-action
energies below are the same for all of them. A user may override any of them:
``EnergyConstants().replace(dac_1bit=0.3e-12)`` or ``crossbar.estimate(..., constants={"dac_1bit": 0.3e-12})``;
a negative, zero or non-finite value raises ``ConfigError`` naming the constant.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from crossbar.config import ConfigError

# NeuroSim's SAR ADC law (DNN_NeuroSim_V1.3, SarADC.cpp, high-performance roadmap): power per column
# a * bits + b watts, held for (bits + 1) conversion steps. node nm -> (a, b) in W.
NEUROSIM_SAR_HP = (
    (7.0, 0.2008e-6, 0.6823e-6),
    (10.0, 0.3076e-6, 1.1543e-6),
    (14.0, 0.4710e-6, 1.9529e-6),
    (22.0, 0.7213e-6, 3.3041e-6),
    (32.0, 1.0157e-6, 7.6286e-6),
    (45.0, 2.1843e-6, 11.931e-6),
    (65.0, 2.9503e-6, 22.047e-6),
    (90.0, 4.3474e-6, 31.782e-6),
    (130.0, 6.4806e-6, 49.047e-6),
)


@dataclass(frozen=True)
class EnergyConstants:
    """Per-action energies (J), times (s) and fit coefficients; see each group's comment for its source.

    Digital arithmetic and SRAM: Horowitz, "Computing's energy problem (and what we can do about it)",
    ISSCC 2014, 45 nm at 0.9 V; scaled to a chip's node and supply as ``(node / 45) * (vdd / 0.9)**2``
    (switched capacitance proportional to feature size, energy to C V^2).
    """

    # Horowitz ISSCC 2014, 45 nm, 0.9 V: one operation, J.
    int8_add: float = 0.03e-12
    int32_add: float = 0.1e-12
    int8_mul: float = 0.2e-12
    int32_mul: float = 3.1e-12
    fp16_add: float = 0.4e-12
    fp16_mul: float = 1.1e-12
    fp32_add: float = 0.9e-12
    fp32_mul: float = 3.7e-12
    # Horowitz ISSCC 2014: one 64-bit read of an 8 KB SRAM, J (buffer access for moving activations).
    sram_64bit: float = 10e-12
    horowitz_node_nm: float = 45.0
    horowitz_vdd: float = 0.9
    # Modelling assumption (not a published number): a nonlinear function (exp, sigmoid, softplus, rsqrt)
    # costs a range reduction and a degree-4 polynomial, i.e. this many multiply-add pairs.
    nonlinear_mul_adds: float = 4.0
    # ISAAC's 1-bit DAC (Shafiee et al., ISCA 2016: 4 mW for 8 x 128 DACs at 1.2 GHz x 10^7 per IMA), as
    # CiMLoop's component library (hwcomponents isaac.py) states it: 0.41667 pJ per drive at 32 nm; a
    # b-bit DAC costs 2^(b-1) times as much (the library's pow_base(2) resolution scaling).
    dac_1bit: float = 0.41667e-12
    dac_node_nm: float = 32.0
    # NeuroSim SAR ADC (see NEUROSIM_SAR_HP): time of one conversion step, s ((bits + 1) steps).
    sar_step_time: float = 1e-9
    # Murmann ADC survey (1997-2021) as fitted by CiMLoop's ADC model (Accelergy ADC plug-in,
    # adc_data/model.yaml): the best Schreier figure of merit FOM_S at sample rate f is
    # min(foms_max, foms_intercept - foms_rolloff * ln(f / Hz)) dB, and E = 1 / (2 * 10^((FOM_S - SNDR)/10))
    # with SNDR = 6.02 bits + 1.76 dB.
    murmann_foms_max_db: float = 180.14159078904734
    murmann_foms_intercept_db: float = 302.7387019052544
    murmann_foms_rolloff_db: float = 6.460790934271676
    # --- Periphery: line drivers, ADC front end, register clocking (docs/energy.md, the model and constants). ---
    # Interconnect capacitance per metre of line: 0.2 fF/um, nearly constant across nodes because width and
    # spacing shrink together (Ho, Mai and Horowitz, "The future of wires", Proc. IEEE 89(4), 2001; the same
    # order as the local-wire tables of the ITRS/IRDS interconnect chapters and NeuroSim's technology files).
    wire_cap_per_m: float = 0.2e-9
    # Gate (plus overlap and fringe) capacitance per metre of transistor width: 1 fF/um, the ITRS PIDS order for
    # planar and FinFET nodes alike; NeuroSim's CalculateGateCap sums the same three terms per width.
    gate_cap_per_m: float = 1.0e-9
    # Cell pitch along a line, in feature sizes F: a 1T1R cell of 125.7 F^2 with aspect ratio 1 (CiMLoop's
    # NeuRRAM cell model, memory_cells/rram_wan_nature_2022.cell.yaml) is 11.2 F on a side.
    cell_pitch_features: float = 11.2
    # Width of a cell's access transistor on each line (its gate on the word line, its drain on the bit line),
    # in F: 4 F, the AccessCMOSWidth of NeuroSim's and CiMLoop's RRAM cell files.
    access_width_features: float = 4.0
    # Clocked capacitance of one register bit per cycle, as a width of gate capacitance in F, following NeuroSim's
    # DFF.cpp: every cycle switches four clock inverters (input and output capacitance) and the gates of two NMOS
    # and two PMOS transmission-gate devices; NMOS 2 F, PMOS twice that (its pnSizeRatio of about 2), an
    # inverter's output taken equal to its input: 4 x (6 F + 6 F) + 2 x 2 F + 2 x 4 F = 60 F.
    dff_clock_width_features: float = 60.0
    # Current-mode readout (``energy.readout: "current"``): the front end works on a copy of the column
    # current drawn from vdd, in this ratio to the cell current. 1.0 is a unity mirror (the IBM speech chip's
    # per-column mirror, Ambrogio et al. 2023 Extended Data Fig. 2c, whose ratio is not published): an assumption.
    sense_mirror_ratio: float = 1.0
    # FITTED to silicon (the only fitted constant): energy of the ADC front end and reference per conversion and
    # per resolved bit, at 45 nm and 0.9 V, scaled with the logic (node / 45 nm x (vdd / 0.9 V)^2): bias of the
    # comparators, integrator or oscillator, reference ladder or DAC, linearisation. Fitted on the validation
    # chips by benchmarks/energy_validation.py, which also fits it leaving each chip out (docs/energy.md).
    adc_front_per_bit: float = 0.43e-12

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not (ok and value > 0):
                raise ConfigError(f"energy constant {item.name}: must be a finite positive number (got {value!r})")

    def replace(self, **changes: float) -> EnergyConstants:
        """A copy with some constants changed; an unknown name raises ConfigError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"energy constant {unknown[0]}: unknown; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, overrides: EnergyConstants | dict[str, float] | str | os.PathLike | None) -> EnergyConstants:
        """The defaults, or these constants, or the defaults with a dict's (or a JSON file's) changes."""
        if overrides is None:
            return cls()
        if isinstance(overrides, EnergyConstants):
            return overrides
        if not isinstance(overrides, dict):
            try:
                overrides = json.loads(Path(overrides).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{overrides}: not a readable JSON file of energy constants ({exc})") from exc
            if not isinstance(overrides, dict):
                raise ConfigError("energy constants: the JSON file must hold an object of name: value")
        return cls().replace(**overrides)

    def feature_cap(self, node_nm: float, features: float, per_m: float) -> float:
        """Capacitance of ``features`` feature sizes of wire or gate width at ``node_nm``, F."""
        return features * node_nm * 1e-9 * per_m

    def logic_scale(self, node_nm: float, vdd: float) -> float:
        """Factor from Horowitz's 45 nm, 0.9 V energies to a chip's node and supply."""
        return (node_nm / self.horowitz_node_nm) * (vdd / self.horowitz_vdd) ** 2
