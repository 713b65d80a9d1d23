"""DAC/ADC kernels against an independent numpy implementation of the documented quantizer."""

import numpy as np
import pytest

from crossbar.periphery import adc_accumulate_kernel, dac_kernel, levels, quantize_reference

EMPTY1 = np.zeros(0, np.float32)
EMPTY2 = np.zeros((0, 0), np.float32)


def reference_quantizer(values, full_scale, bits):
    """The quantizer as the docs state it, written out independently in numpy float32."""
    n = np.float32(2 ** (bits - 1) - 1)
    codes = np.clip(np.rint(values / np.float32(full_scale) * n), -n, n)
    return codes * (np.float32(full_scale) / n)


@pytest.mark.parametrize("bits", [2, 4, 8, 12])
def test_quantize_reference_is_the_documented_quantizer(bits):
    rng = np.random.default_rng(bits)
    values = rng.normal(0, 2, 10_000).astype(np.float32)
    got = quantize_reference(values, 3.0, bits)
    assert np.array_equal(got, reference_quantizer(values, 3.0, bits))
    assert len(np.unique(got)) <= 2 * levels(bits) + 1
    assert np.max(np.abs(got)) <= 3.0 + 1e-6


@pytest.mark.parametrize("bits", [None, 2, 5, 8])
@pytest.mark.parametrize("fixed", [-1.0, 0.7])
def test_dac_kernel_matches_reference_exactly(bits, fixed):
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 1, (37, 300)) * rng.uniform(0.1, 5, (37, 1))).astype(np.float32)
    x[3] = 0.0
    out, scales = np.empty_like(x), np.empty(37, np.float32)
    dac_kernel(x, levels(bits), fixed, out, scales)
    expected_scales = np.abs(x).max(axis=1) if fixed < 0 else np.full(37, fixed)
    expected_scales = np.where(expected_scales > 0, expected_scales, 1).astype(np.float32)
    assert np.array_equal(scales, expected_scales)
    normalised = x / expected_scales[:, None]
    expected = normalised if bits is None else reference_quantizer(normalised, 1.0, bits)
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("bits", [None, 3, 8])
def test_adc_kernel_matches_reference_exactly(bits):
    rng = np.random.default_rng(1)
    blocks, batch, width = 3, 20, 50
    tile_out = rng.normal(0, 4, (blocks, batch, width)).astype(np.float32)
    full_scale = rng.uniform(2, 8, (blocks, width)).astype(np.float32)
    digital = rng.uniform(0.5, 2, (blocks, width)).astype(np.float32)
    in_scale = rng.uniform(0.5, 3, batch).astype(np.float32)
    bias = rng.normal(0, 1, width).astype(np.float32)
    out = np.empty((batch, width), np.float32)
    adc_accumulate_kernel(tile_out, full_scale, levels(bits), digital, in_scale, EMPTY1, EMPTY2, EMPTY2, bias, out)
    quantized = tile_out if bits is None else reference_quantizer(tile_out, full_scale[:, None, :], bits)
    expected = (digital[:, None, :] * quantized).sum(axis=0) * in_scale[:, None] + bias
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    if bits is not None:  # clipping: nothing beyond the full scale survives
        assert np.all(np.abs(quantized) <= full_scale[:, None, :] * (1 + 1e-6))


def test_adc_kernel_noise_has_the_stated_variance():
    rng = np.random.default_rng(2)
    batch, width = 4000, 8
    tile_out = np.zeros((1, batch, width), np.float32)
    ones = np.ones((1, width), np.float32)
    output_var = np.full(width, 0.09, np.float32)
    cell_var = np.full((batch, width), 0.16, np.float32)
    normal = rng.standard_normal((batch, width)).astype(np.float32)
    out = np.empty((batch, width), np.float32)
    scale = np.full(batch, 2.0, np.float32)
    adc_accumulate_kernel(tile_out, ones, 0, ones, scale, output_var, cell_var, normal, EMPTY1, out)
    np.testing.assert_allclose(out, 2.0 * 0.5 * normal, rtol=1e-6)
