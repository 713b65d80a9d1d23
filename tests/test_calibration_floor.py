"""The noise floor of the held-out spread error (``calibration.noise_floor``) against the scatter of the std
of samples drawn afresh from the known law that made the data."""

import numpy as np
import pytest

from calibration.noise_floor import noise_floor
from calibration.schema import Relaxation

LEVELS, CELLS, TIMES = 16, 500, (0.0, 1.0)


def _median_error_of_the_true_model(draw, replicates: int, rng: np.random.Generator) -> float:
    """Median over replicates of the median over LEVELS levels of |sigma - s| / s, s the std of CELLS // 2
    fresh reads of unit std: what the true std scores against a measured validation half."""
    s = np.std(draw(rng, (replicates, LEVELS, CELLS // 2)), axis=-1, ddof=1)
    return float(np.median(np.median(np.abs(1 - s) / s, axis=1)))


@pytest.mark.parametrize(
    "name, draw",
    [
        ("gaussian", lambda rng, shape: rng.standard_normal(shape)),
        ("laplace", lambda rng, shape: rng.laplace(0.0, 1 / np.sqrt(2), shape)),  # unit std, kurtosis 6
    ],
)
def test_floor_estimates_match_the_scatter_of_fresh_samples(name, draw):
    rng = np.random.default_rng(3)
    target = np.repeat(np.linspace(1e-6, 16e-6, LEVELS), CELLS)
    std = 0.05 * target  # any std per level: the floor is relative
    reads = target[:, None] + std[:, None] * draw(rng, (target.size, len(TIMES)))
    floor = noise_floor(Relaxation(np.arange(target.size), target, np.asarray(TIMES), reads), split_seed=0)
    assert floor.scored.all() and floor.bootstrap.shape == (400, LEVELS, len(TIMES))
    reference = _median_error_of_the_true_model(draw, 2000, np.random.default_rng(4))
    summary = floor.summary(0.05, 0.15)
    for estimate, tolerance in (("analytic", 0.15), ("bootstrap", 0.15), ("split_half", 0.2)):
        assert np.asarray(summary[estimate]) == pytest.approx(reference, rel=tolerance), (name, estimate, reference)
    assert np.all(np.asarray(summary["bootstrap_p5"]) < summary["bootstrap"])
    assert np.all(np.asarray(summary["bootstrap"]) < summary["bootstrap_p95"])
