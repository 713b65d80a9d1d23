"""The parallel tile runner: the same numbers for any number of threads, and blocks that cover the output."""

import threading

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info
from torch import nn

import crossbar
from crossbar.engine import COLUMN_SPLIT_PRODUCTS, LOOP_ROWS, MIN_TASK_ROWS, column_split, split
from crossbar.gaussian import call_key


@pytest.mark.parametrize(("batch", "parts"), [(1000, 2), (1000, 3), (10, 2), (2 * MIN_TASK_ROWS - 1, 2), (640, 16)])
def test_split_covers_the_batch_once(batch, parts):
    blocks = split(batch, parts)
    assert 1 <= len(blocks) <= parts
    assert len(blocks) == 1 or min(b.stop - b.start for b in blocks) >= MIN_TASK_ROWS
    covered = np.zeros(batch, int)
    for rows in blocks:
        covered[rows] += 1
    assert np.all(covered == 1)


@pytest.mark.parametrize(("batch", "n_in", "n_out"), [(37, 600, 700), (300, 600, 700), (200, 40, 2100)])
@pytest.mark.parametrize("cell_std", [0.0, 0.03])
def test_thread_counts_agree_to_the_rounding_of_the_products(batch, n_in, n_out, cell_std):
    """One task and blocks of input vectors give the same outputs, except where the BLAS's float
    rounding (which depends on how a product is cut) moves a tile output across an ADC decision level:
    then the output moves by one ADC step, in a handful of the outputs. A repeated run is bit-identical."""
    torch.manual_seed(0)
    layer = nn.Linear(n_in, n_out)
    chip = crossbar.ChipConfig.preset("default").replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    chip = chip.replace(read_noise={"cell_std": cell_std})
    x = torch.randn(batch, n_in)
    threads = torch.get_num_threads()
    outputs = []
    try:
        for count in (1, 2, 3, 2):
            torch.set_num_threads(count)
            compiled = crossbar.compile(nn.Sequential(layer), chip, seed=4)
            with torch.no_grad():
                outputs.append(compiled(x))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outputs[1], outputs[3])
    tile = compiled[0].tile
    adc_step = float((tile.record.from_code * np.abs(compiled[0].tile.quantize_inputs(x.numpy())[1]).max()).max())
    for other in outputs[1:3]:
        moved = (other - outputs[0]).abs()
        assert (moved > 1e-5).float().mean() < 1e-3
        assert moved.max() <= 1.01 * adc_step
    expected = layer(x).detach()
    relative = ((outputs[0] - expected).norm() / expected.norm()).item()
    assert 0 < relative < 0.3  # noisy hardware, not another layer


@pytest.mark.parametrize("batch", [3, 400])
def test_nan_or_inf_in_any_task_raises(batch):
    """A NaN or an infinity in any input vector, whichever task converts it, raises instead of converting."""
    torch.manual_seed(1)
    compiled = crossbar.compile(nn.Sequential(nn.Linear(300, 40)), "default", seed=0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for bad in (float("nan"), float("inf")):
            x = torch.randn(batch, 300)
            x[batch - 1, 299] = bad  # in the last task's block
            with pytest.raises(ValueError, match="NaN or inf"), torch.no_grad():
                compiled(x)
    finally:
        torch.set_num_threads(threads)


def test_concurrent_forwards_leave_the_blas_thread_counts_as_they_were():
    """Forwards from several Python threads at once share the one-thread BLAS limit; the last restores it."""
    before = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    compiled = crossbar.compile(nn.Sequential(nn.Linear(300, 200)), "ideal", seed=0)
    x = torch.randn(256, 300)
    with torch.no_grad():
        expected = compiled(x)
    outputs, errors = [], []

    def forward() -> None:
        try:
            with torch.no_grad():
                for _ in range(20):
                    outputs.append(compiled(x))
        except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=forward) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(outputs) == 60
    assert all(torch.equal(y, expected) for y in outputs)  # the ideal chip draws no noise
    assert [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"] == before


@pytest.mark.parametrize(("width", "parts"), [(700, 2), (700, 3), (64, 2), (10, 4), (4096, 16)])
def test_column_split_covers_the_columns_once(width, parts):
    ranges = column_split(width, parts)
    assert 1 <= len(ranges) <= parts
    covered = np.zeros(width, int)
    for c0, c1 in ranges:
        assert c1 > c0 and (c0 % 16 == 0)
        covered[c0:c1] += 1
    assert np.all(covered == 1)


@pytest.mark.parametrize("cell_std", [0.0, 0.03])
def test_small_batches_are_bit_identical_for_any_thread_count(cell_std):
    """At most LOOP_ROWS vectors are multiplied by loops in one fixed order, whether one task does every
    output column or each thread a range of them (a layer big enough to be cut)."""
    torch.manual_seed(2)
    layer = nn.Linear(1000, 900)
    assert LOOP_ROWS * 1000 * 900 >= COLUMN_SPLIT_PRODUCTS > 1000 * 900  # one vector is not cut, a few are
    chip = crossbar.ChipConfig.preset("default").replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    chip = chip.replace(read_noise={"cell_std": cell_std})
    x = torch.randn(LOOP_ROWS, 1000)
    threads = torch.get_num_threads()
    outputs = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            compiled = crossbar.compile(nn.Sequential(layer), chip, seed=5)
            with torch.no_grad():
                outputs.append((compiled(x[:1]), compiled(x)))
    finally:
        torch.set_num_threads(threads)
    for single, batch in outputs[1:]:
        assert torch.equal(single, outputs[0][0]) and torch.equal(batch, outputs[0][1])
    expected = layer(x).detach()
    assert 0 < ((outputs[0][1] - expected).norm() / expected.norm()).item() < 0.3


def test_call_key_is_numpys_seed_sequence():
    """The per-call noise key is numpy's SeedSequence([seed, call]) word, bit for bit, beyond 2**32 too."""
    rng = np.random.default_rng(0)
    pairs = [(0, 0), (0, 1), (2**32 - 1, 2**32 - 1), (7, 2**32), (2**40, 3)]
    pairs += [(int(a), int(b)) for a, b in rng.integers(0, 2**32, (300, 2))]
    for seed, call in pairs:
        expected = np.random.SeedSequence([seed, call]).generate_state(1, np.uint64)[0]
        assert call_key(seed, call) == expected and isinstance(call_key(seed, call), np.uint64)


def test_a_changed_bias_is_used():
    """The forward keeps a numpy view of the bias: updates in place, a new tensor's memory and a new
    parameter all reach the output (ideal chip: no noise, so outputs differ by the change alone)."""
    torch.manual_seed(3)
    compiled = crossbar.compile(nn.Sequential(nn.Linear(40, 30)), "ideal", seed=0)
    layer, x = compiled[0], torch.randn(5, 40)
    with torch.no_grad():
        first, original = compiled(x), layer.bias.detach().clone()
        layer.bias.add_(1.0)  # in place
        assert torch.allclose(compiled(x), first + 1.0, atol=1e-5)
        layer.bias.data = layer.bias.data + 1.0  # new memory, same parameter
        assert torch.allclose(compiled(x), first + 2.0, atol=1e-5)
        layer.bias = nn.Parameter(torch.zeros(30))  # a new parameter
        assert torch.allclose(compiled(x), first - original, atol=1e-5)
