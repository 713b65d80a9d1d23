"""crossbar against aihwkit 1.1.0 on settings where both model the same hardware.

Forward pass: aihwkit's torch inference tile (``TorchInferenceRPUConfig``; its C++ tiles are not used) with
noise-free DAC/ADC quantization, against ``crossbar.compile`` on the equivalent chip. Settings on both sides:

    aihwkit                                           crossbar
    mapping.max_input_size = max_output_size = 256    tile 256 x 256
    weight_scaling_omega = 1, columnwise = True        mapping.weight_scaling = "column"
    forward.inp_res = 1 / (2**b - 2), inp_bound = 1    dac.bits = b   (L = 2**(b-1) - 1 levels per sign)
    noise_management ABS_MAX (or CONSTANT, nm_thres)   dac.mode = "dynamic" (or "fixed", input_range)
    forward.out_res = 1 / (2**b - 2), out_bound = 12   adc.bits = b, adc.mode = "fixed", full_scale = 12
    bound_management NONE, out_noise = inp_noise = 0   read_noise.output_std = 0, device.model = "none"
    drift_compensation = None

Where the two conventions differ (documented in docs/aihwkit_comparison.md) the tests choose shapes on which
they coincide:

* aihwkit splits a dimension evenly (600 -> 200 + 200 + 200), crossbar fills tiles from the start
  (256 + 256 + 88): input sizes here are <= 256 or multiples of 256. Output splits do not matter (scaling
  and ADC are per column), so output sizes 300 (aihwkit 150 + 150, crossbar 256 + 44) and 384
  (192 + 192, 256 + 128) are included.
* Both tools' dynamic input scale is per tile: aihwkit's ABS_MAX noise management and crossbar's dynamic DAC
  take max|x| over each input vector's slice on each 256-row block. The inputs are generic: their scales
  vary between vectors and between the slices of a vector (a factor 10**U(-1, 1) per slice, one slice in
  every fourth vector 100 times larger again, some slices all zero), so the per-tile convention is
  exercised, not assumed.

Programming noise: crossbar's ``device.program`` with the PCM model against aihwkit's
``PCMLikeNoiseModel(g_max=25)`` drawn with a different seed, and both against the published closed form.

``python tests/test_aihwkit_comparison.py`` prints the agreement figures quoted in the documentation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
from aihwkit.nn.conversion import convert_to_analog
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType
from scipy import stats
from torch import nn

import crossbar
from crossbar.config import DeviceConfig, MappingConfig
from crossbar.device import program

TILE = 256
ADC_FULL_SCALE = 12.0
# (in_features, out_features): every input size splits into the same 256-row blocks in both tools.
SHAPES = [(256, 256), (200, 100), (512, 384), (1024, 128), (768, 300)]
BITS = [6, 8, 10]
BATCH = 256
# Fraction of outputs that must agree to float32 precision; the rest may differ by one ADC code per tile.
# Over seeds 0-7 of every shape and bit width here, both DAC modes, the lowest fraction seen was 0.99961
# (10 bits, 768 x 300, dynamic).
MIN_IDENTICAL = 0.998


def aihwkit_model(model: nn.Module, bits: int, input_range: float | None = None) -> nn.Module:
    """aihwkit's noise-free torch inference tiles: b-bit DAC/ADC, no bound management, no drift compensation.

    ``input_range`` None: ABS_MAX noise management (crossbar's dynamic DAC); a number: CONSTANT noise
    management with that threshold (crossbar's fixed DAC with that input_range).
    """
    config = TorchInferenceRPUConfig()
    config.mapping.max_input_size = config.mapping.max_output_size = TILE
    config.mapping.weight_scaling_omega = 1.0
    config.mapping.weight_scaling_columnwise = True
    forward = config.forward
    forward.inp_res = forward.out_res = 1.0 / (2**bits - 2)
    forward.inp_bound, forward.out_bound = 1.0, ADC_FULL_SCALE
    forward.out_noise = forward.inp_noise = 0.0
    if input_range is None:
        forward.noise_management = NoiseManagementType.ABS_MAX
    else:
        forward.noise_management = NoiseManagementType.CONSTANT
        forward.nm_thres = input_range
    forward.bound_management = BoundManagementType.NONE
    config.drift_compensation = None
    return convert_to_analog(model, config).eval()


def crossbar_model(model: nn.Module, bits: int, input_range: float | None = None) -> nn.Module:
    """The equivalent crossbar chip: the ideal preset with b-bit DAC and fixed-range b-bit ADC."""
    dac = {"bits": bits, "mode": "dynamic"} if input_range is None else {"bits": bits, "mode": "fixed"}
    if input_range is not None:
        dac["input_range"] = input_range
    chip = crossbar.ChipConfig.preset("ideal").replace(
        tile={"rows": TILE, "cols": TILE},
        dac=dac,
        adc={"bits": bits, "mode": "fixed", "full_scale": ADC_FULL_SCALE},
        mapping={"weight_scaling": "column"},
    )
    return crossbar.compile(model, chip, seed=0).eval()


def random_layer_and_inputs(in_features: int, out_features: int, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """A seeded nn.Linear (torch's default init distribution, with bias) and generic inputs.

    The inputs' scales vary between vectors (0.1 to 5.1) and between the 256-slices of one vector (a factor
    10**U(-1, 1) per slice); in one vector out of four, one random slice is 100 times larger still, and in one
    out of 32 the last slice is all zeros.
    """
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(in_features, out_features))
    with torch.no_grad():
        bound = 1.0 / np.sqrt(in_features)
        model[0].weight.uniform_(-bound, bound, generator=generator)
        model[0].bias.uniform_(-bound, bound, generator=generator)
    n_blocks = -(-in_features // TILE)
    slice_scale = (0.1 + 5.0 * torch.rand(BATCH, 1, generator=generator)) * 10.0 ** (
        2.0 * torch.rand(BATCH, n_blocks, generator=generator) - 1.0
    )
    boosted = torch.rand(BATCH, generator=generator) < 0.25
    which = torch.randint(n_blocks, (BATCH,), generator=generator)
    slice_scale[boosted, which[boosted]] *= 100.0
    slice_scale[torch.arange(0, BATCH, 32), -1] = 0.0  # an all-zero slice: both tools then take the scale 1
    scale = slice_scale.repeat_interleave(TILE, dim=1)[:, :in_features]
    x = torch.randn(BATCH, in_features, generator=generator) * scale
    return model, x


def slice_maxima(x: torch.Tensor) -> torch.Tensor:
    """(B, R): max|x| of each input vector's slice on each 256-row block (the dynamic DAC's scales s_br)."""
    return torch.stack([x[:, start : start + TILE].abs().amax(dim=1) for start in range(0, x.shape[1], TILE)], dim=1)


def one_code_per_tile(weight: torch.Tensor, input_scale: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, out) bounds on |y_aihwkit - y_crossbar|: one ADC code in every tile, and in the worst single tile.

    ``input_scale``: (B, R), the DAC scale s_br of vector b on row block r. Output j of vector b is
    ``sum_r s_br * d_rj * q(y_rbj)`` in both tools (d_rj: the digital scale max|W_j| over row block r, q: the
    ADC of step 2 * 12 / (2**b - 2) = 12 / L). The two compute the same float products in different orders
    (and x / s against x * (1 / s)), so a tile output that lies on a rounding boundary of the DAC or the ADC
    can round the other way. A DAC code flip moves a tile output by |w_ij| / L <= 1 / L, and a float
    rounding difference by far less; while a tile's slice has fewer than 12 flipped DAC codes (measured:
    one to three flips per million conversions) the two ADC inputs differ by less than one ADC step 12 / L, so
    the ADC outputs differ by at most one code, s_br * d_rj * 12 / L in output units. Summed over the row
    blocks this bounds every output; in practice a flip is in one tile.
    """
    n_levels = 2 ** (bits - 1) - 1
    step = ADC_FULL_SCALE / n_levels
    digital = torch.stack(
        [weight[:, start : start + TILE].abs().amax(dim=1) for start in range(0, weight.shape[1], TILE)]
    )  # (R, out)
    per_tile = input_scale[:, :, None] * digital[None] * step  # (B, R, out)
    return per_tile.sum(dim=1), per_tile.amax(dim=1)


def float_tolerance(y: torch.Tensor) -> torch.Tensor:
    """(B, 1): float32 precision of each output vector, 1e-5 of its largest |y| (the scales vary between vectors)."""
    return 1e-5 * y.abs().amax(dim=1, keepdim=True)


def compare(y_aihwkit: torch.Tensor, y_crossbar: torch.Tensor, bound_all: torch.Tensor) -> dict[str, float]:
    """Agreement figures; ``identical``: equal to float32 precision (relative 1e-5 of the vector's output scale)."""
    diff = (y_aihwkit - y_crossbar).abs()
    float_tol = float_tolerance(y_aihwkit)
    identical = diff <= float_tol
    return {
        "identical": identical.float().mean().item(),
        "n_different": int((~identical).sum().item()),
        "n_outputs": diff.numel(),
        "max_diff_over_bound": (diff / (bound_all + float_tol)).max().item(),
        "max_diff": diff.max().item(),
    }


def assert_agree(y_aihwkit: torch.Tensor, y_crossbar: torch.Tensor, bound_all: torch.Tensor) -> dict[str, float]:
    figures = compare(y_aihwkit, y_crossbar, bound_all)
    excess = (y_aihwkit - y_crossbar).abs() - (bound_all + float_tolerance(y_aihwkit))
    assert excess.max() <= 0, f"difference beyond one ADC code per tile: {figures}"
    assert figures["identical"] > MIN_IDENTICAL, f"too many outputs differ: {figures}"
    return figures


def forward_pair(in_features: int, out_features: int, bits: int, input_range: float | None, seed: int = 0):
    model, x = random_layer_and_inputs(in_features, out_features, seed)
    with torch.no_grad():
        y_aihwkit = aihwkit_model(model, bits, input_range)(x)
        y_crossbar = crossbar_model(model, bits, input_range)(x)
    scale = slice_maxima(x)
    if input_range is not None:
        scale = torch.full_like(scale, input_range)
    bound_all, bound_one = one_code_per_tile(model[0].weight.detach(), scale, bits)
    return y_aihwkit, y_crossbar, bound_all, bound_one, model(x).detach()


def test_inputs_scales_vary_between_row_block_slices():
    """Guard for the test below: a per-vector DAC scale would differ from the per-tile one on these inputs."""
    _, x = random_layer_and_inputs(1024, 128, seed=0)
    maxima = slice_maxima(x)
    nonzero = (maxima > 0).all(dim=1)
    ratio = maxima[nonzero].amax(dim=1) / maxima[nonzero].amin(dim=1)
    assert (ratio > 10).float().mean() > 0.5
    assert (ratio > 1000).any()
    assert (~nonzero).any()


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize(("in_features", "out_features"), SHAPES)
def test_dynamic_dac_fixed_adc_matches_aihwkit(in_features, out_features, bits):
    """Per-tile noise management on both sides: generic inputs agree, whatever their slices' scales."""
    y_aihwkit, y_crossbar, bound_all, _, _ = forward_pair(in_features, out_features, bits, None)
    assert_agree(y_aihwkit, y_crossbar, bound_all)


@pytest.mark.parametrize("bits", [6, 8])
@pytest.mark.parametrize(("in_features", "out_features"), [(256, 256), (768, 300)])
def test_fixed_dac_matches_aihwkit_constant_noise_management(in_features, out_features, bits):
    """A fixed DAC range is the same in every tile, so generic inputs agree, clipped ones included."""
    y_aihwkit, y_crossbar, bound_all, _, _ = forward_pair(in_features, out_features, bits, input_range=2.0)
    assert_agree(y_aihwkit, y_crossbar, bound_all)


# ---------------------------------------------------------------------------------------------------------
# Programming noise of the PCM model

PCM_COEFF_US = (0.26348, 1.9650, -1.1731)  # aihwkit's published PCMLikeNoiseModel defaults, at g_max = 25 uS
G_MAX_US = 25.0
LEVELS_US = (0.0, 1.0, 5.0, 10.0, 15.0, 20.0, 25.0)
SAMPLES = 20000


def pcm_sigma_us(g_us: float) -> float:
    """Programming-error std (uS) of the published model: c0 + c1 (g / g_max) + c2 (g / g_max)**2."""
    r = g_us / G_MAX_US
    return PCM_COEFF_US[0] + PCM_COEFF_US[1] * r + PCM_COEFF_US[2] * r**2


def clamped_normal_moments(mean: float, sigma: float) -> tuple[float, float]:
    """Mean and std of max(N(mean, sigma**2), 0): both tools clip programmed conductances at zero."""
    a = mean / sigma
    phi, cdf = stats.norm.pdf(a), stats.norm.cdf(a)
    first = mean * cdf + sigma * phi
    second = (mean**2 + sigma**2) * cdf + mean * sigma * phi
    return first, float(np.sqrt(second - first**2))


def program_both() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """crossbar (seed 11) and aihwkit (seed 12) programmed conductances in uS, one row per target level,
    and crossbar's conductances at inference (uS)."""
    targets_us = np.repeat(np.asarray(LEVELS_US)[:, None], SAMPLES, axis=1)
    device = DeviceConfig(model="pcm", t_inference=3600.0, drift_scale=0.0, read_noise_scale=0.0)
    chip = program(targets_us * 1e-6, device, MappingConfig(g_max=G_MAX_US * 1e-6), seed=11)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12)
        reference = PCMLikeNoiseModel(g_max=G_MAX_US).apply_programming_noise_to_conductance(
            torch.from_numpy(targets_us)
        )
    return chip.programmed * 1e6, reference.numpy(), chip.at_inference * 1e6


@pytest.fixture(scope="module")
def programmed_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return program_both()


@pytest.mark.parametrize("level", range(len(LEVELS_US)))
def test_pcm_programming_noise_matches_aihwkit_and_the_closed_form(programmed_pair, level):
    ours, theirs, _ = programmed_pair
    target = LEVELS_US[level]
    assert stats.ks_2samp(ours[level], theirs[level]).pvalue > 1e-3
    mean, std = clamped_normal_moments(target, pcm_sigma_us(target))
    for sample in (ours[level], theirs[level]):
        assert np.std(sample) == pytest.approx(std, rel=0.03)
        assert np.mean(sample) == pytest.approx(mean, abs=5 * std / np.sqrt(SAMPLES))
    if target == 0.0:  # half the draws clip to zero
        assert np.mean(ours[level] == 0.0) == pytest.approx(0.5, abs=0.02)


def test_pcm_without_drift_and_read_noise_keeps_the_programmed_conductances(programmed_pair):
    ours, _, at_inference = programmed_pair
    np.testing.assert_array_equal(at_inference, ours)


def test_compiled_weights_carry_the_pcm_programming_noise():
    """Through compile: a weight w >= 0 is G+ = w g_max (noisy) minus G- = 0 (noisy, clipped at zero)."""
    levels = torch.tensor([1.0, 0.8, 0.5, 0.2, 0.0, -0.5, -1.0])
    out_features = 1024
    weight = levels[torch.arange(TILE * out_features) % len(levels)].reshape(out_features, TILE)
    weight[:, 0] = 1.0  # every column's max |w| is 1, so the normalised weights are the levels themselves
    model = nn.Sequential(nn.Linear(TILE, out_features, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(weight)
    chip = crossbar.ChipConfig.preset("ideal").replace(
        device={"model": "pcm", "prog_noise_scale": 1.0, "drift_scale": 0.0, "read_noise_scale": 0.0}
    )
    realised = crossbar.compile(model, chip, seed=5)[0].tile.weights.T
    zero_mean, zero_std = clamped_normal_moments(0.0, pcm_sigma_us(0.0))
    for w in levels.tolist():  # input 0 is all ones, so it is left out
        sample = realised[:, 1:][weight[:, 1:].numpy() == w]
        on_mean, on_std = clamped_normal_moments(abs(w) * G_MAX_US, pcm_sigma_us(abs(w) * G_MAX_US))
        expected_mean = np.sign(w) * (on_mean - zero_mean) / G_MAX_US if w else 0.0
        expected_std = np.hypot(on_std, zero_std) / G_MAX_US
        assert np.std(sample) == pytest.approx(expected_std, rel=0.03), w
        assert np.mean(sample) == pytest.approx(expected_mean, abs=5 * expected_std / np.sqrt(sample.size)), w


def main() -> None:
    """Print the agreement figures of docs/aihwkit_comparison.md."""
    print("dynamic DAC (ABS_MAX), generic inputs with per-vector and per-slice scales")
    print(f"{'shape':>12} {'bits':>4} {'identical':>10} {'differ':>8} {'max|d|/1 code':>14} {'max|d|/bound':>13}")
    for in_features, out_features in SHAPES:
        for bits in BITS:
            y_a, y_c, bound_all, bound_one, _ = forward_pair(in_features, out_features, bits, None)
            f = compare(y_a, y_c, bound_all)
            one = ((y_a - y_c).abs() / (bound_one + float_tolerance(y_a))).max().item()
            print(
                f"{in_features:>5}x{out_features:<6} {bits:>4} {f['identical']:>10.6f} "
                f"{f['n_different']:>4}/{f['n_outputs']:<7} {one:>8.3f} {f['max_diff_over_bound']:>13.3f}"
            )
    print("\nfixed DAC (input_range 2) against CONSTANT noise management (nm_thres 2), generic inputs")
    for in_features, out_features in [(256, 256), (768, 300)]:
        for bits in BITS:
            y_a, y_c, bound_all, _, _ = forward_pair(in_features, out_features, bits, input_range=2.0)
            f = compare(y_a, y_c, bound_all)
            figures = f"{f['identical']:>10.6f} {f['n_different']:>4}/{f['n_outputs']}"
            print(f"{in_features:>5}x{out_features:<6} {bits:>4} {figures}")
    ours, theirs, _ = program_both()
    print("\nPCM programming noise (uS): level, closed-form std, crossbar std, aihwkit std, KS p")
    for level, target in enumerate(LEVELS_US):
        _, std = clamped_normal_moments(target, pcm_sigma_us(target))
        p = stats.ks_2samp(ours[level], theirs[level]).pvalue
        print(f"{target:5.1f} {std:.4f} {np.std(ours[level]):.4f} {np.std(theirs[level]):.4f} {p:.3f}")


if __name__ == "__main__":
    main()
