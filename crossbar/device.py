"""The aihwkit boundary: device physics on conductance arrays.

Everything outside this module speaks siemens; aihwkit's noise models speak microsiemens, so conversion
happens here and only here. aihwkit draws from torch's global generator; each call below forks it and seeds
it, so a chip instance depends only on its seed and never disturbs the caller's random state.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from aihwkit.inference.converter.conductance import SinglePairConductanceConverter
from aihwkit.inference.noise.base import BaseNoiseModel
from aihwkit.inference.noise.hermes import HermesNoiseModel
from aihwkit.inference.noise.pcm import CustomDriftPCMLikeNoiseModel, PCMLikeNoiseModel
from aihwkit.inference.noise.reram import ReRamWan2022NoiseModel
from numpy.polynomial import polynomial

from crossbar.config import ConfigError, DeviceConfig, MappingConfig
from crossbar.profile import DeviceProfile, ProfileError, load_profile

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
    if device.model == "profile":
        try:
            profile = load_profile(device.profile)
        except ProfileError as exc:
            raise ConfigError(f"device.profile: {exc}") from None
        start, stop = profile.time_range
        if not start <= device.t_inference <= stop:
            raise ConfigError(
                f"device.t_inference: profile {device.profile!r} is measured from {start:g} to {stop:g} s "
                f"(got {device.t_inference!r})"
            )
        return ProfileNoiseModel(profile, g_max_us, device)
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
    return ProgrammingStream(device, mapping, seed).program(targets)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch's intra-op threads held to one while the block runs, then restored.

    aihwkit's noise models are chains of elementwise torch ops on a part's float64 arrays (a few MB): a second
    thread gains little on them, and when other processes load the cores OpenMP's waiting threads collapse
    them (measured on 2 busy cores: a 1536 x 576 layer took 7.1 s on two threads against 0.7 s on one). The
    draws do not depend on the thread count (torch's CPU normal generator is serial).
    """
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


class ProgrammingStream:
    """Programs the parts of one chip instance one after another, from one seeded stream of draws.

    The first ``program`` call draws exactly what ``program(targets, device, mapping, seed)`` draws; each later
    call continues the stream (aihwkit's draws, torch's generator, whose state is kept here between calls), so
    a layer programmed part by part depends only on its seed and the order of its parts. torch's global
    generator is left as the caller had it. Each part runs on one torch thread (``one_torch_thread``).
    """

    def __init__(self, device: DeviceConfig, mapping: MappingConfig, seed: int) -> None:
        self.model = noise_model(device, mapping)
        self.t_inference = float(device.t_inference)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.state = torch.get_rng_state()

    def program(self, targets: np.ndarray) -> ProgrammedConductances:
        """Target conductances (siemens, any shape) -> this part's conductances, the stream's next draws."""
        if self.model is None:
            return ProgrammedConductances(targets.copy(), targets.copy())
        with torch.random.fork_rng(devices=[]), one_torch_thread():
            torch.set_rng_state(self.state)
            programmed = _sample(self.model, targets, self.t_inference)
            self.state = torch.get_rng_state()
        return programmed


def _sample(model: BaseNoiseModel, targets: np.ndarray, t_inference: float) -> ProgrammedConductances:
    """Targets (S) through an aihwkit noise model (uS), drawing from torch's global generator as it is."""
    with warnings.catch_warnings():
        # aihwkit 1.1.0's HERMES model indexes with lists, which this torch deprecates (results are right).
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        g_target = torch.from_numpy(np.asarray(targets, dtype=np.float64) * MICRO)
        g_prog = model.apply_programming_noise_to_conductance(g_target)
        drift_param = model.generate_drift_coefficients(g_target)
        g_final = model.apply_drift_noise_to_conductance(g_prog, drift_param, t_inference)
    return ProgrammedConductances(g_prog.numpy() / MICRO, g_final.numpy() / MICRO)


class ProfileNoiseModel(BaseNoiseModel):
    """A calibrated ``crossbar.profile.DeviceProfile`` as an aihwkit noise model (microsiemens, at a chip's g_max).

    aihwkit draws what it can express: the programming std through ``PCMLikeNoiseModel`` (its ``prog_coeff``),
    the power-law drift through ``CustomDriftPCMLikeNoiseModel`` (its g/nu tables; its own read noise off),
    each time of a relaxation table through ``ReRamWan2022NoiseModel`` (its ``coeff_dic``). This class adds
    what they cannot: the mean offsets, the interpolation of a relaxation table between its times, the
    nonparametric spread table (tabulated mean and std, empirical quantiles: ``crossbar.spread_table``,
    drawn from torch's seeded generator) and the read noise polynomial (one read at t_inference). Siemens
    quantities of the profile are scaled by chip g_max / profile g_max; aihwkit clamps at 0 before the mean
    offset is added, this class after.
    """

    def __init__(self, profile: DeviceProfile, g_max_us: float, device: DeviceConfig | None = None) -> None:
        device = device or DeviceConfig(model="none")
        self.profile, self.g_max = profile, g_max_us
        self.to_us = g_max_us / profile.g_max  # profile siemens at its g_max -> uS at this g_max
        self.scales = (device.prog_noise_scale, device.drift_scale, device.read_noise_scale)
        super().__init__(SinglePairConductanceConverter(g_max=g_max_us))
        self.aihwkit_model: PCMLikeNoiseModel | None = None
        if profile.relaxation is None and (profile.programming is not None or profile.drift is not None):
            prog_coeff = self._us(profile.programming.std) if profile.programming is not None else [0.0]
            common = {"prog_coeff": prog_coeff, "g_max": g_max_us, "prog_noise_scale": self.scales[0]}
            if profile.drift is None:
                self.aihwkit_model = PCMLikeNoiseModel(**common, read_noise_scale=0.0, drift_scale=0.0)
            else:
                drift = profile.drift
                levels = self._us(drift.levels)
                table = {
                    "g_lst": [0.0, *levels, max(g_max_us, levels[-1])],
                    "nu_mean_lst": [drift.nu_mean[0], *drift.nu_mean, drift.nu_mean[-1]],
                    "nu_std_lst": [drift.nu_std[0], *drift.nu_std, drift.nu_std[-1]],
                }
                self.aihwkit_model = CustomDriftPCMLikeNoiseModel(
                    table, **common, t_0=drift.t0, read_noise_scale=0.0, drift_scale=self.scales[1]
                )

    def _us(self, coefficients: list[float]) -> list[float]:
        return [float(c) * self.to_us for c in coefficients]

    def _poly(self, coefficients: list[float], g_target: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(polynomial.polyval((g_target / self.g_max).numpy(), self._us(coefficients)))

    def _relaxed(self, g_target: torch.Tensor, t: float) -> torch.Tensor:
        table = self.profile.relaxation.at(t)
        reram = ReRamWan2022NoiseModel(coeff_dic={t: self._us(table.std)}, g_max=self.g_max, noise_scale=self.scales[0])
        g = reram.apply_drift_noise_to_conductance(g_target, g_target, t)
        return (g + self._poly(table.mean, g_target)).clamp(min=0.0)

    def _spread(self, g_target: torch.Tensor, t: float) -> torch.Tensor:
        """g_T + mean + prog_noise_scale std z, with z from the table's quantiles (one uniform draw per device)."""
        table = self.profile.spread
        g = g_target.numpy() / self.to_us  # profile siemens
        mean, std = table.moments(g, t)
        z = table.deviates(g, t, torch.rand(g_target.shape, dtype=torch.float64).numpy())
        return (g_target + torch.from_numpy((mean + self.scales[0] * std * z) * self.to_us)).clamp(min=0.0)

    @torch.no_grad()
    def apply_programming_noise_to_conductance(self, g_target: torch.Tensor) -> torch.Tensor:
        if self.profile.spread is not None:
            return self._spread(g_target, self.profile.spread.times[0])
        if self.profile.relaxation is not None:
            return self._relaxed(g_target, self.profile.relaxation.times[0])
        if self.aihwkit_model is None:
            return g_target.clone()
        g_prog = self.aihwkit_model.apply_programming_noise_to_conductance(g_target)
        if self.profile.programming is None:
            return g_prog
        return (g_prog + self._poly(self.profile.programming.mean, g_target)).clamp(min=0.0)

    @torch.no_grad()
    def generate_drift_coefficients(self, g_target: torch.Tensor) -> torch.Tensor:
        if self.profile.spread is not None:  # called once per programming: refuse or warn about the range here
            self.profile.spread.check_range(g_target.numpy() / self.to_us)
        if self.profile.drift is not None and self.aihwkit_model is not None:
            return self.aihwkit_model.generate_drift_coefficients(g_target.clone()).double()
        return g_target.clone()

    @torch.no_grad()
    def apply_drift_noise_to_conductance(
        self, g_prog: torch.Tensor, drift_noise_param: torch.Tensor, t_inference: float
    ) -> torch.Tensor:
        if self.profile.spread is not None:
            g = self._spread(drift_noise_param, t_inference)  # the parameter is the target, as for the table
        elif self.profile.relaxation is not None:
            g = self._relaxed(drift_noise_param, t_inference)  # the parameter is the target, as in ReRamWan2022
        elif self.profile.drift is not None and self.aihwkit_model is not None:
            g = self.aihwkit_model.apply_drift_noise_to_conductance(g_prog, drift_noise_param, t_inference)
        else:
            g = g_prog
        if self.profile.read_noise is not None and self.scales[2] > 0:
            sigma = self._poly(self.profile.read_noise.std, g).clamp(min=0.0)
            g = (g + self.scales[2] * sigma * torch.randn_like(g)).clamp(min=0.0)
        return g


def program_profile(
    profile: DeviceProfile, targets: np.ndarray, t_inference: float, seed: int, g_max: float | None = None
) -> np.ndarray:
    """Target conductances (S, any shape) programmed with a profile and read at ``t_inference`` s (S)."""
    model = ProfileNoiseModel(profile, (profile.g_max if g_max is None else g_max) * MICRO)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _sample(model, targets, float(t_inference)).at_inference
