"""The shared SSM backbone and datasets."""

import pytest
import torch
from torch import nn

from models.backbone import SequenceModel
from models.data import sequential_digits, tiny_shakespeare


class _Shift(nn.Module):
    """A causal mixer: y_t = W x_{t-1}."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(nn.functional.pad(x, (0, 0, 1, 0))[:, :-1])


def test_classifier_matches_hand_written_forward():
    torch.manual_seed(0)
    model = SequenceModel(3, 8, 2, 5, _Shift).eval()
    x = torch.randn(4, 7, 3)
    h = model.encoder(x)
    for block in model.blocks:
        h = h + block.mixer(block.norm(h))
    expected = model.decoder(model.norm(h).mean(dim=1))
    torch.testing.assert_close(model(x), expected)


def test_language_model_is_causal():
    torch.manual_seed(0)
    model = SequenceModel(11, 8, 2, 11, _Shift, task="lm").eval()
    ids = torch.randint(0, 11, (2, 9))
    changed = ids.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 11
    a, b = model(ids), model(changed)
    assert a.shape == (2, 9, 11)
    torch.testing.assert_close(a[:, :5], b[:, :5])  # outputs before the change do not see it
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_bad_task_is_a_clear_error():
    with pytest.raises(ValueError, match="task"):
        SequenceModel(3, 8, 1, 5, _Shift, task="regress")
    with pytest.raises(ValueError, match="vocabulary"):
        SequenceModel(11, 8, 1, 5, _Shift, task="lm")


def test_datasets():
    x_train, y_train, x_test, y_test = sequential_digits()
    assert x_train.shape[1:] == (64, 1) and len(x_train) + len(x_test) == 1797
    assert set(y_test.tolist()) == set(range(10))
    corpus = tiny_shakespeare()
    assert corpus.decode(corpus.encode("To be")) == "To be"
    assert len(corpus.train) == pytest.approx(9 * len(corpus.valid), rel=1e-3)
