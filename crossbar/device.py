"""The aihwkit boundary: device physics on conductance arrays.

Everything outside this module speaks siemens; aihwkit's noise models speak microsiemens, so conversion
happens here and only here. aihwkit draws from torch's global generator; each call below forks it and seeds
it, so a chip instance depends only on its seed and never disturbs the caller's random state.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from aihwkit.inference.noise.base import BaseNoiseModel
from aihwkit.inference.noise.hermes import HermesNoiseModel
from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
from aihwkit.inference.noise.reram import ReRamWan2022NoiseModel

from crossbar.config import ConfigError, DeviceConfig, MappingConfig

MICRO = 1e6  # siemens -> microsiemens
HERMES_G_MAX_US = 20.7  # largest conductance aihwkit's HERMES model is characterised at (two devices)
RERAM_WAN2022_G_MAX_REF_US = 40.0  # g_max its polynomial coefficients were fitted at


@dataclass
class ProgrammedConductances:
    """One chip instance's conductances, siemens, same shape as the targets.

    ``programmed``: right after programming (t = 0); ``at_inference``: at ``t_inference`` after drift
    and with the read noise aihwkit draws with it.
    """

    programmed: np.ndarray
    at_inference: np.ndarray


def noise_model(device: DeviceConfig, mapping: MappingConfig) -> BaseNoiseModel | None:
    """The aihwkit noise model for a device config at the chip's g_max (None for ``model="none"``)."""
    g_max_us = mapping.g_max * MICRO
    if device.model == "none":
        return None
    if device.model == "pcm":
        # PCM coefficients are fitted at 25 uS and rescaled by aihwkit to g_max (relative error preserved).
        return PCMLikeNoiseModel(
            g_max=g_max_us,
            prog_noise_scale=device.prog_noise_scale,
            read_noise_scale=device.read_noise_scale,
            drift_scale=device.drift_scale,
        )
    if device.model == "hermes":
        if g_max_us > HERMES_G_MAX_US * (1 + 1e-9):
            raise ConfigError(
                f"mapping.g_max: the HERMES device model is characterised up to {HERMES_G_MAX_US} uS "
                f"(got {g_max_us:g} uS)"
            )
        return HermesNoiseModel(
            g_max=g_max_us,
            prog_noise_scale=device.prog_noise_scale,
            read_noise_scale=device.read_noise_scale,
            drift_scale=device.drift_scale,
        )
    model = ReRamWan2022NoiseModel(g_max=g_max_us, noise_scale=device.prog_noise_scale)
    # aihwkit 1.1.0 stores its 40 uS reference under a name it never reads; set the one it reads so the
    # coefficients are rescaled to this g_max like the PCM ones.
    model.coeff_g_max_reference = RERAM_WAN2022_G_MAX_REF_US
    if float(device.t_inference) not in model.coeff_dic:
        times = ", ".join(f"{t:g}" for t in sorted(model.coeff_dic))
        raise ConfigError(
            f"device.t_inference: the reram_wan2022 model is measured only at t = {times} s "
            f"(got {device.t_inference:g})"
        )
    return model


def program(targets: np.ndarray, device: DeviceConfig, mapping: MappingConfig, seed: int) -> ProgrammedConductances:
    """Program target conductances (siemens, any shape) once: one seeded chip instance."""
    model = noise_model(device, mapping)
    if model is None:
        return ProgrammedConductances(targets.copy(), targets.copy())
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # aihwkit 1.1.0's HERMES model indexes with lists, which this torch deprecates (results are right).
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        torch.manual_seed(seed)
        g_target = torch.from_numpy(np.asarray(targets, dtype=np.float64) * MICRO)
        g_prog = model.apply_programming_noise_to_conductance(g_target)
        drift_param = model.generate_drift_coefficients(g_target)
        g_final = model.apply_drift_noise_to_conductance(g_prog, drift_param, float(device.t_inference))
    return ProgrammedConductances(g_prog.numpy() / MICRO, g_final.numpy() / MICRO)
