"""The sweep workloads that models/ owns: the demo MLP and every trained model of ``models.zoo`` on its
held-out data. Registered with the sweep engine through the ``crossbar.workloads`` entry point (setup.cfg),
so ``crossbar/`` never imports this package."""

from __future__ import annotations

import functools
from collections.abc import Callable

from crossbar.sweep.workloads import Workload
from models import demo, zoo
from models.data import digits_split


def digits_mlp() -> Workload:
    """The demo MLP (64-300-100-10) on the 540 held-out scikit-learn digits, top-1 accuracy."""
    x_train, _, x_test, y_test = digits_split()
    return Workload(demo.load_model(), x_test, y_test, "accuracy", calibration_inputs=x_train[:256])


def shipped_model(name: str, tokens: int = 8192) -> Workload:
    """A trained model of ``models.zoo`` on its held-out data: top-1 accuracy for the digits models, mean
    cross-entropy (nats per character) over ``tokens`` held-out characters for the language models."""
    data = zoo.default_data(name)
    inputs, targets = zoo.held_out(data, tokens=tokens)
    metric = "cross_entropy" if data == "tiny-shakespeare" else "accuracy"
    return Workload(zoo.load_model(name), inputs, targets, metric, batch_size=64)


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "digits-mlp": digits_mlp,
    **{name: functools.partial(shipped_model, name) for name in zoo.MODELS if name != "digits-mlp"},
}
