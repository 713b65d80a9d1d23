"""Fused fast paths switched off in compiled models, so that no mapped weight is used outside its tiles.

In ``eval()`` under ``torch.no_grad()``, ``nn.TransformerEncoderLayer`` (and ``nn.TransformerEncoder``'s
nested-tensor path, ``nn.MultiheadAttention``) run native kernels that read ``linear1.weight``,
``self_attn.in_proj_weight`` and the rest directly: the tiles of a compiled layer would be skipped and the output
would equal float. ``guard(compiled)`` hooks every module of a ``FAST_PATH_MODULES`` type so that its forward
runs with ``torch.backends.mha`` fast paths off (torch's own switch; restored afterwards, even on an exception)
and turns off ``nn.TransformerEncoder.use_nested_tensor``. The switch is process-wide while such a forward
runs: a float transformer running at the same moment in another thread takes its slow path too (same numbers).
"""

from __future__ import annotations

import threading

import torch
from torch import nn

FAST_PATH_MODULES: tuple[type[nn.Module], ...] = (
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.Transformer,
    nn.MultiheadAttention,
)

_lock = threading.Lock()
_active = 0  # forwards (of any thread) inside a guarded module
_saved = True


def _enter(module: nn.Module, args: tuple) -> None:
    global _active, _saved
    with _lock:
        if _active == 0:
            _saved = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
        _active += 1


def _leave(module: nn.Module, args: tuple, output: object) -> None:
    global _active
    with _lock:
        _active -= 1
        if _active == 0:
            torch.backends.mha.set_fastpath_enabled(_saved)


def guard(compiled: nn.Module) -> None:
    """Switch off the fast paths of every ``FAST_PATH_MODULES`` module of ``compiled`` (in place)."""
    for module in compiled.modules():
        if isinstance(module, FAST_PATH_MODULES):
            if isinstance(module, nn.TransformerEncoder):
                module.use_nested_tensor = False
            module.register_forward_pre_hook(_enter)
            module.register_forward_hook(_leave, always_call=True)
