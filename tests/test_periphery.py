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
    block, width = 128, 300  # three row blocks, the last one short
    x = (rng.normal(0, 1, (37, width)) * rng.uniform(0.1, 5, (37, 1))).astype(np.float32)
    x[3] = 0.0
    x[5, 128:256] = 0.0
    out, scales = np.empty_like(x), np.empty((37, 3), np.float32)
    dac_kernel(x, block, levels(bits), fixed, out, scales)
    for r, cols in enumerate([slice(0, 128), slice(128, 256), slice(256, 300)]):
        part = x[:, cols]
        expected_scale = np.abs(part).max(axis=1) if fixed < 0 else np.full(37, fixed)
        expected_scale = np.where(expected_scale > 0, expected_scale, 1).astype(np.float32)
        assert np.array_equal(scales[:, r], expected_scale)
        normalised = part / expected_scale[:, None]
        expected = normalised if bits is None else reference_quantizer(normalised, 1.0, bits)
        assert np.array_equal(out[:, cols], expected)


@pytest.mark.parametrize("bits", [None, 3, 8])
def test_adc_kernel_matches_reference_exactly(bits):
    rng = np.random.default_rng(1)
    blocks, batch, width = 3, 20, 50
    tile_out = rng.normal(0, 4, (blocks, batch, width)).astype(np.float32)
    full_scale = rng.uniform(2, 8, (blocks, width)).astype(np.float32)
    digital = rng.uniform(0.5, 2, (blocks, width)).astype(np.float32)
    in_scale = rng.uniform(0.5, 3, (batch, blocks)).astype(np.float32)
    bias = rng.normal(0, 1, width).astype(np.float32)
    out = np.empty((batch, width), np.float32)
    adc_accumulate_kernel(tile_out, full_scale, levels(bits), digital, in_scale, 0.0, EMPTY2, EMPTY2, bias, out)
    quantized = tile_out if bits is None else reference_quantizer(tile_out, full_scale[:, None, :], bits)
    expected = (digital[:, None, :] * in_scale.T[:, :, None] * quantized).sum(axis=0) + bias
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    if bits is not None:  # clipping: nothing beyond the full scale survives
        assert np.all(np.abs(quantized) <= full_scale[:, None, :] * (1 + 1e-6))


def test_adc_kernel_noise_has_the_stated_variance():
    rng = np.random.default_rng(2)
    batch, width = 4000, 8
    tile_out = np.zeros((2, batch, width), np.float32)
    digital = np.stack([np.ones(width), np.full(width, 2.0)]).astype(np.float32)
    in_scale = np.tile(np.array([[2.0, 0.5]], np.float32), (batch, 1))
    cell_var = np.full((batch, width), 0.16, np.float32)
    normal = rng.standard_normal((batch, width)).astype(np.float32)
    out = np.empty((batch, width), np.float32)
    adc_accumulate_kernel(tile_out, digital, 0, digital, in_scale, 0.09, cell_var, normal, EMPTY1, out)
    # var = 0.09 * ((1 * 2)^2 + (2 * 0.5)^2) + 0.16 = 0.61
    np.testing.assert_allclose(out, np.sqrt(0.61) * normal, rtol=1e-6)
