"""Energy and latency of a compiled model on its chip (docs/energy.md).

report = crossbar.estimate(analog_model, example_inputs)
print(report); report.to_dict(); report.plot("energy.png")
"""

from crossbar.energy.breakdown import EnergyReport, LayerEnergy
from crossbar.energy.constants import EnergyConstants
from crossbar.energy.estimate import estimate

__all__ = ["EnergyConstants", "EnergyReport", "LayerEnergy", "estimate"]
