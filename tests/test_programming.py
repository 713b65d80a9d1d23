"""Programming a layer part by part: the state it keeps against the state computed before parts existed
(tests/data/programming_before_row_blocks.npz, computed at commit 64cfe40), and the order of the stream of
draws across parts."""

from pathlib import Path

import numpy as np
import pytest

import crossbar
from crossbar.tiles import AnalogTiles

BEFORE = Path(__file__).parent / "data" / "programming_before_row_blocks.npz"
SMALL = {"tile": {"rows": 32, "cols": 32}}
CHIPS = {
    "ideal_wires": crossbar.ChipConfig.preset("default").replace(**SMALL, wires={"r_wl": 0.0, "r_bl": 0.0}),
    "default": crossbar.ChipConfig.preset("default").replace(**SMALL),
    "cell_noise": crossbar.ChipConfig.preset("default").replace(
        **SMALL, read_noise={"cell_std": 0.05}, adc={"mode": "weights"}
    ),
}
STATE = ("weights", "digital_scale", "full_scale", "row_conductance", "cell_variance")


@pytest.mark.parametrize("shape", ["one_tile", "two_column_blocks"])
@pytest.mark.parametrize("chip", list(CHIPS))
def test_one_part_layers_keep_the_state_they_had_before(shape, chip):
    """Same seed, same programmed state: bit for bit with ideal wires; with IR drop the effective matrix is
    now computed by nested dissection, which rounds differently (1e-12 relative) before the float32 cast."""
    before = np.load(BEFORE)
    tiles = AnalogTiles(before[f"{shape}/weight"], CHIPS[chip], seed=7)
    assert tiles._parts() == [(0, range(tiles.grid.col_blocks))]
    for name in STATE:
        key = f"{shape}/{chip}/{name}"
        if key not in before:
            assert getattr(tiles, name) is None
            continue
        got, expected = np.asarray(getattr(tiles, name)), before[key]
        assert got.dtype == expected.dtype and got.shape == expected.shape
        if chip == "ideal_wires" or name == "row_conductance":
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7 * np.abs(expected).max())


def test_parts_continue_one_stream_of_draws(monkeypatch):
    """A layer of 2 x 2 tiles programmed one tile per part: its first part exactly as the layer of that part
    alone (the stream starts at the seed), the other parts from later draws, reproducibly."""
    monkeypatch.setattr(crossbar.tiles, "PART_CELLS", 32 * 32)
    chip = CHIPS["default"]
    weight = np.random.default_rng(3).normal(0, 0.1, (50, 60)).astype(np.float32)  # (out, in)
    tiles = AnalogTiles(weight, chip, seed=11)
    assert tiles._parts() == [(0, range(0, 1)), (0, range(1, 2)), (1, range(0, 1)), (1, range(1, 2))]
    first = AnalogTiles(weight[:32, :32], chip, seed=11)
    np.testing.assert_array_equal(tiles.weights[:32, :32], first.weights)
    np.testing.assert_array_equal(tiles.digital_scale[0, :32], first.digital_scale[0])
    np.testing.assert_array_equal(tiles.weights, AnalogTiles(weight, chip, seed=11).weights)
    # Two equal row blocks: the second draws on from the first, it does not restart at the seed.
    twice = np.concatenate([weight[:, :32], weight[:, :32]], axis=1)
    twin = AnalogTiles(twice, chip, seed=11)
    np.testing.assert_array_equal(twin.weights[:32], tiles.weights[:32])
    assert not np.array_equal(twin.weights[32:], twin.weights[:32])


def test_compile_shares_no_tensor_with_the_original_model():
    """Compile lets the layers it maps read the original weights instead of a deep copy (memory), but the
    compiled model keeps no tensor of the original: not through a layer used twice nor through tied weights."""
    import torch
    from torch import nn

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.body = nn.Linear(8, 8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.embed.weight  # tied, as in language models
            self.twice = nn.Linear(8, 8)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.head(self.twice(self.twice(self.body(self.embed(tokens)))))

    model = Tied()
    model.again = model.twice  # one module at two places
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    compiled = crossbar.compile(model, crossbar.ChipConfig.preset("ideal"))
    original = {p.data_ptr() for p in model.parameters()}
    assert not [n for n, p in compiled.named_parameters() if p.data_ptr() in original]
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, before[name], rtol=0, atol=0)


def test_programming_runs_on_one_torch_thread_and_draws_the_same_on_any(monkeypatch):
    """Each part runs on one torch thread (no OpenMP waiting threads on busy cores); the caller's thread count
    is restored, and the chip instance does not depend on it. The spy calls the real aihwkit sampling."""
    import torch

    weight = np.random.default_rng(5).normal(0, 0.1, (40, 70)).astype(np.float32)
    seen, original, before = [], crossbar.device._sample, torch.get_num_threads()

    def spy(*args):
        seen.append(torch.get_num_threads())
        return original(*args)

    monkeypatch.setattr(crossbar.device, "_sample", spy)
    states = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            states.append(AnalogTiles(weight, CHIPS["ideal_wires"], seed=4).weights)
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}
    np.testing.assert_array_equal(states[0], states[1])


def test_parts_solved_for_ir_drop_on_threads_equal_the_parts_one_after_another(monkeypatch):
    """With IR drop and several torch threads, the next part is programmed while the pool solves the arrays
    of the one before; the state is bit for bit that of one thread (no pool, parts one after another)."""
    import torch

    monkeypatch.setattr(crossbar.tiles, "PART_CELLS", 32 * 32)
    weight = np.random.default_rng(8).normal(0, 0.1, (70, 90)).astype(np.float32)  # 3 x 3 parts
    before, states = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            tiles = AnalogTiles(weight, CHIPS["cell_noise"], seed=6)
            assert len(tiles._parts()) == 9
            states.append([getattr(tiles, name) for name in STATE])
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*states, strict=True):
        np.testing.assert_array_equal(one, two)
