"""crossbar: a tile-level simulator of analog compute-in-memory accelerators.

chip = crossbar.ChipConfig.preset("default")
analog = crossbar.compile(model, chip, seed=0)
print(crossbar.report(analog))
print(crossbar.estimate(analog, x))  # energy and latency per inference
crossbar.save(analog, "chip.xbar"); analog = crossbar.load("chip.xbar")  # a programmed chip instance
"""

from crossbar.chip_file import load, save
from crossbar.compiler import calibrate, compile, register_converter, register_layer
from crossbar.config import ChipConfig, ConfigError
from crossbar.conv import TiledConv, TiledConv1d, TiledConv2d, TiledConv3d, TiledConvTranspose
from crossbar.energy import EnergyConstants, EnergyReport, estimate
from crossbar.layers import TiledLinear
from crossbar.mapping_report import MappingReport, report
from crossbar.weight_noise import WeightNoise

__all__ = [
    "ChipConfig",
    "ConfigError",
    "EnergyConstants",
    "EnergyReport",
    "MappingReport",
    "TiledConv",
    "TiledConv1d",
    "TiledConv2d",
    "TiledConv3d",
    "TiledConvTranspose",
    "TiledLinear",
    "WeightNoise",
    "calibrate",
    "compile",
    "estimate",
    "load",
    "register_converter",
    "register_layer",
    "report",
    "save",
]
__version__ = "0.1.0"
