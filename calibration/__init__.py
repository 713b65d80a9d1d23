"""Device profiles fitted from HDF5 measurements of real devices.

profile = calibration.fit("measurements.h5")      # validate, fit, choose power law or relaxation table
profile.save("device.json"); calibration.DeviceProfile.load("device.json")
g = profile.program(g_target, t_inference=3600.0, seed=0)   # siemens in, siemens out
"""

from calibration.fitting import fit
from calibration.importers import FORMATS, convert
from calibration.reader import read
from calibration.schema import Measurements, SchemaError
from crossbar.profile import DeviceProfile, ProfileError, load_profile

__all__ = [
    "FORMATS",
    "DeviceProfile",
    "Measurements",
    "ProfileError",
    "SchemaError",
    "convert",
    "fit",
    "load_profile",
    "read",
]
