"""Workloads for the sweep tests, named in specs as ``<this file>:function``."""

import os
from pathlib import Path

from torch import nn

from crossbar.sweep.workloads import Workload
from models.workloads import digits_mlp


class DiesOnce(nn.Module):
    """The digits MLP, except that the first forward anywhere (claimed through ``marker``) kills its process."""

    def __init__(self, inner: nn.Module, marker: str) -> None:
        super().__init__()
        self.inner, self.marker = inner, marker

    def forward(self, x):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return self.inner(x)
        os._exit(1)  # a worker dying mid-point, as from a segfault or the out-of-memory killer


def digits_mlp_dies_once(marker: str) -> Workload:
    workload = digits_mlp()
    workload.model = DiesOnce(workload.model, marker)
    return workload


def digits_mlp_touch(marker: str) -> Workload:
    """The digits MLP; building it writes ``marker`` (shows whether any point was started)."""
    Path(marker).write_text("built")
    return digits_mlp()
