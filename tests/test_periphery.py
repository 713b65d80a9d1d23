"""DAC/ADC kernels against an independent numpy implementation of the documented quantizer."""

import numpy as np
import pytest
from scipy import stats

from crossbar.engine import adc_accumulate_kernel, dac_kernel, noise_bias_kernel
from crossbar.gaussian import fill_standard_normal, normal_row
from crossbar.periphery import levels, quantize_reference

EMPTY1 = np.zeros(0, np.float32)
EMPTY2 = np.zeros((0, 0), np.float32)


def reference_codes(values, full_scale, bits):
    """The quantizer as the docs state it, written out independently in numpy float32."""
    n = np.float32(2 ** (bits - 1) - 1)
    return np.clip(np.rint(values.astype(np.float32) * (n / np.float32(full_scale))), -n, n)


@pytest.mark.parametrize("bits", [2, 4, 8, 12])
def test_quantize_reference_is_the_documented_quantizer(bits):
    rng = np.random.default_rng(bits)
    values = rng.normal(0, 2, 10_000).astype(np.float32)
    got = quantize_reference(values, 3.0, bits)
    n = np.float32(2 ** (bits - 1) - 1)
    assert np.array_equal(got, reference_codes(values, 3.0, bits) * (np.float32(3.0) / n))
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
    x[6, 7] = -0.0  # a negative zero: |x| is still 0
    out, scales = np.full((3, 37, block), np.nan, np.float32), np.empty((37, 3), np.float32)
    squares = np.full((37, width), np.nan, np.float32)
    assert dac_kernel(x, levels(bits), fixed, out, scales, squares) == 0
    for r, cols in enumerate([slice(0, 128), slice(128, 256), slice(256, 300)]):
        part = x[:, cols]
        expected_scale = np.abs(part).max(axis=1) if fixed < 0 else np.full(37, fixed)
        expected_scale = np.where(expected_scale > 0, expected_scale, 1).astype(np.float32)
        assert np.array_equal(scales[:, r], expected_scale)
        if bits is None:
            expected = part / expected_scale[:, None]
        else:
            n = np.float32(2 ** (bits - 1) - 1)
            expected = np.stack([reference_codes(p, s, bits) for p, s in zip(part, expected_scale, strict=True)])
            expected = expected * (np.float32(1) / n)
        used = cols.stop - cols.start
        assert np.array_equal(out[r, :, :used], expected)
        assert np.all(out[r, :, used:] == 0)  # the unused word lines of the last row block
        np.testing.assert_allclose(squares[:, cols], (expected * expected_scale[:, None]) ** 2, rtol=1e-6)


def test_dac_kernel_counts_nan_and_inf():
    x = np.ones((4, 10), np.float32)
    x[1, 2], x[3, 7] = np.nan, -np.inf
    out, scales = np.empty((2, 4, 5), np.float32), np.empty((4, 2), np.float32)
    assert dac_kernel(x, 127, -1.0, out, scales, EMPTY2) == 2


@pytest.mark.parametrize("bits", [None, 3, 8])
def test_adc_kernel_matches_reference(bits):
    rng = np.random.default_rng(1)
    blocks, batch, width = 3, 20, 50
    tile_out = rng.normal(0, 4, (blocks, batch, width)).astype(np.float32)
    full_scale = rng.uniform(2, 8, (blocks, width)).astype(np.float32)
    digital = rng.uniform(0.5, 2, (blocks, width)).astype(np.float32)
    in_scale = rng.uniform(0.5, 3, (batch, blocks)).astype(np.float32)
    bias = rng.normal(0, 1, width).astype(np.float32)
    n = np.float32(levels(bits))
    to_code = n / full_scale if bits else np.zeros_like(digital)
    from_code = digital * (full_scale / n) if bits else digital
    out = np.full((batch, width), np.nan, np.float32)
    for r in range(blocks):
        adc_accumulate_kernel(tile_out[r], to_code[r], from_code[r], levels(bits), in_scale[:, r], out, r == 0)
    noise_bias_kernel(out, in_scale, EMPTY2, EMPTY2, np.uint64(0), 0, 0, bias)
    quantized = tile_out if bits is None else quantize_reference(tile_out, full_scale[:, None, :], bits)
    expected = (digital[:, None, :] * in_scale.T[:, :, None] * quantized).sum(axis=0) + bias
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    if bits is not None:  # clipping: nothing beyond the full scale survives
        assert np.all(np.abs(quantized) <= full_scale[:, None, :] * (1 + 1e-6))


def test_noise_kernel_has_the_stated_variance_and_depends_only_on_the_key_and_position():
    batch, width = 4000, 9
    digital = np.stack([np.ones(width), np.full(width, 2.0)]).astype(np.float32)
    in_scale = np.tile(np.array([[2.0, 0.5]], np.float32), (batch, 1))
    cell_var = np.full((batch, width), 0.16, np.float32)
    noise_scale = 0.3 * digital
    outs = []
    for key in (7, 7, 8):
        out = np.zeros((batch, width), np.float32)
        noise_bias_kernel(out, in_scale, noise_scale, cell_var, np.uint64(key), 0, 0, EMPTY1)
        outs.append(out)
    # var = 0.09 * ((1 * 2)^2 + (2 * 0.5)^2) + 0.16 = 0.61
    z = np.empty((batch, width), np.float32)
    fill_standard_normal(np.uint64(7), z)
    np.testing.assert_allclose(outs[0], np.sqrt(0.61) * z, rtol=1e-5)
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    # a block of the output, computed alone, gets the draws of its position in the whole output
    block = np.zeros((100, 4), np.float32)
    noise_bias_kernel(block, in_scale[50:150], noise_scale[:, 3:7], cell_var[50:150, 3:7], np.uint64(7), 50, 3, EMPTY1)
    assert np.array_equal(block, outs[0][50:150, 3:7])


def test_normal_row_gives_any_slice_of_a_row():
    whole = np.empty((3, 1000), np.float32)
    fill_standard_normal(np.uint64(11), whole)
    part = np.empty(333, np.float32)
    normal_row(np.uint64(11), 2, 555, part, np.empty(333, np.uint32), np.empty(334, np.int64))
    assert np.array_equal(part, whole[2, 555:888])


def test_counter_based_normals_are_standard_normal():
    z = np.empty((1000, 2001), np.float32)
    fill_standard_normal(np.uint64(2024), z)
    rows_correlation = np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1]  # neighbouring rows, same columns
    z = z.ravel().astype(np.float64)
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert z.var() == pytest.approx(1.0, abs=6 * np.sqrt(2 / z.size))
    assert stats.kstest(z, "norm").pvalue > 1e-3
    for threshold in (2.0, 3.0, 3.5, 4.0):  # the ziggurat's tail and wedges, against the exact tail mass
        expected = 2 * stats.norm.sf(threshold)
        assert np.mean(np.abs(z) > threshold) == pytest.approx(expected, rel=6 / np.sqrt(expected * z.size))
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5 / np.sqrt(z.size)
    assert abs(rows_correlation) < 5 / np.sqrt(z.size)
