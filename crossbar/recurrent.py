"""Recurrent layers with their weight matrices on tiles: ``convert_recurrent`` for nn.RNN, nn.LSTM, nn.GRU and
nn.RNNCell, nn.LSTMCell, nn.GRUCell.

Every matrix of torch's layer is one programmed matrix (a ``TiledLinear``), named after torch's parameter:
``weight_ih_l{k}`` (with ``bias_ih_l{k}``) is ``ih_l{k}``, ``weight_hh_l{k}`` (with ``bias_hh_l{k}``) is
``hh_l{k}``, LSTM's projection ``weight_hr_l{k}`` is ``hr_l{k}``, with ``_reverse`` for the second direction;
a cell has ``ih`` and ``hh``. The input-to-hidden product of a layer and direction is one tiled call over all
time steps of the sequence (it does not depend on the state); the hidden-to-hidden product is one tiled call
per time step. The gates, their nonlinearities and the state updates are digital and counted by
``digital_ops``. The equations are torch's (docs of nn.RNN, nn.LSTM, nn.GRU), in torch's gate order.

Packed sequences (``nn.utils.rnn.PackedSequence``) run as torch runs them: step t updates the first
``batch_sizes[t]`` sequences of the length-sorted batch, so no padding position is ever computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (torch's own spelling)
from torch.nn.utils.rnn import PackedSequence

from crossbar.attention import BYTES
from crossbar.layers import TiledLinear

if TYPE_CHECKING:
    from crossbar.compiler import MakeTiled

_CELL_MODES = {nn.LSTMCell: "LSTM", nn.GRUCell: "GRU"}
_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _step(
    mode: str, gi: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, hh: TiledLinear, hr: TiledLinear | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One time step for a batch: gi (n, gates x H) the input part (W_ih x + b_ih), h (n, H_out) and, for an
    LSTM, c (n, H) -> the new (h, c)."""
    gh = hh(h)
    if mode == "LSTM":
        gates = gi + gh
        i, f, _, o = torch.sigmoid(gates).chunk(4, dim=-1)  # one call for the three sigmoid gates
        c = f * c + i * torch.tanh(gates.chunk(4, dim=-1)[2])
        h = o * torch.tanh(c)
        return (h if hr is None else hr(h)), c
    if mode == "GRU":
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return n + z * (h - n), None
    pre = gi + gh
    return (torch.tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)), None


def _step_ops(mode: str, hidden: int, out: int) -> dict[str, float]:
    """Digital operations of one time step of one sequence (the tiles' own work is counted by their hooks)."""
    if mode == "LSTM":  # gi + gh, 3 sigmoid + 2 tanh, c = f c + i g, h = o tanh(c)
        ops = {"add": 5.0 * hidden, "mul": 3.0 * hidden, "nonlinear": 5.0 * hidden}
        state_bytes = 2 * hidden + out
    elif mode == "GRU":  # r, z sums, i_n + r h_n, n + z (h - n); 2 sigmoid + tanh
        ops = {"add": 5.0 * hidden, "mul": 2.0 * hidden, "nonlinear": 3.0 * hidden}
        state_bytes = out
    else:  # gi + gh, tanh (or ReLU: a comparison, priced as an add)
        relu = mode == "RNN_RELU"
        ops = {"add": (1.0 + relu) * hidden, "nonlinear": float(hidden * (not relu))}
        state_bytes = out
    ops["memory_bytes"] = BYTES * (2.0 * _GATES[mode] * hidden + 2.0 * state_bytes)
    return ops


def _add_ops(total: dict[str, float], ops: dict[str, float], times: int) -> None:
    for key, value in ops.items():
        total[key] = total.get(key, 0.0) + value * times


class TiledRecurrent(nn.Module):
    """nn.RNN / nn.LSTM / nn.GRU on tiles (build it with ``convert_recurrent``); same attributes and forward:
    ``forward(input, hx=None) -> (output, h_n)`` or, for an LSTM, ``(output, (h_n, c_n))``. input
    (L, N, H_in), (N, L, H_in) with ``batch_first``, (L, H_in) unbatched, or a PackedSequence."""

    def __init__(self, module: nn.RNNBase, make_tiled: MakeTiled) -> None:
        super().__init__()
        for attribute in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout"):
            setattr(self, attribute, getattr(module, attribute))
        self.bidirectional, self.proj_size = module.bidirectional, module.proj_size
        self.suffixes = ("", "_reverse") if module.bidirectional else ("",)
        for layer in range(self.num_layers):
            for suffix in self.suffixes:
                for kind in ("ih", "hh", "hr"):
                    weight = getattr(module, f"weight_{kind}_l{layer}{suffix}", None)
                    if weight is None:
                        continue
                    bias = getattr(module, f"bias_{kind}_l{layer}{suffix}", None) if kind != "hr" else None
                    name = f"{kind}_l{layer}{suffix}"
                    setattr(self, name, make_tiled(weight, bias, name))
        self._ops: dict[str, float] = {}

    @property
    def out_size(self) -> int:
        """Size of h (the projection size of an LSTM with ``proj_size``)."""
        return self.proj_size or self.hidden_size

    def _initial_states(
        self, hx: object, batch: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """(h0, c0 or None) as (layers x directions, batch, size), and whether hx was given unbatched."""
        layers = self.num_layers * len(self.suffixes)
        lstm = self.mode == "LSTM"
        if hx is None:
            h0 = torch.zeros(layers, batch, self.out_size, dtype=dtype)
            return h0, (torch.zeros(layers, batch, self.hidden_size, dtype=dtype) if lstm else None), False
        if lstm != isinstance(hx, tuple):
            raise ValueError(f"{type(self).__name__} ({self.mode}): hx must be {'(h0, c0)' if lstm else 'a tensor'}")
        h0, c0 = hx if lstm else (hx, None)
        unbatched = h0.dim() == 2
        states = []
        for name, state, size in (("h0", h0, self.out_size), ("c0", c0, self.hidden_size)):
            if state is None:
                continue
            state = state.unsqueeze(1) if unbatched else state
            if tuple(state.shape) != (layers, batch, size):
                raise ValueError(
                    f"{type(self).__name__} ({self.mode}): {name} has shape {tuple(state.shape)}, "
                    f"expected {(layers, batch, size)} (layers x directions, batch, size)"
                )
            states.append(state.to(dtype))
        return states[0], (states[1] if lstm else None), unbatched

    def _direction(
        self, gi: torch.Tensor, sizes: list[int], h: torch.Tensor, c: torch.Tensor | None, name: str, reverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One layer and direction over a packed sequence: gi (total, gates x H) in time-major packed order,
        ``sizes`` the batch size of each step -> outputs (total, H_out), last h, last c."""
        hh, hr = getattr(self, f"hh_{name}"), getattr(self, f"hr_{name}", None)
        steps = list(gi.split(sizes))
        outputs: list[torch.Tensor | None] = [None] * len(sizes)
        for t in reversed(range(len(sizes))) if reverse else range(len(sizes)):
            n = sizes[t]
            c_n = None if c is None else c[:n]
            h_new, c_new = _step(self.mode, steps[t], h[:n], c_n, hh, hr)
            outputs[t] = h_new
            h = h_new if n == h.shape[0] else torch.cat([h_new, h[n:]])
            if c is not None:
                c = c_new if n == c.shape[0] else torch.cat([c_new, c[n:]])
        return torch.cat(outputs), h, c

    def forward(self, input: torch.Tensor | PackedSequence, hx: object = None) -> tuple[object, object]:  # noqa: A002
        packed = isinstance(input, PackedSequence)
        unbatched = False
        if packed:
            data, sizes = input.data, input.batch_sizes.tolist()
            batch = sizes[0]
            if hx is not None and input.sorted_indices is not None:
                hx = (
                    tuple(s.index_select(1, input.sorted_indices) for s in hx)
                    if isinstance(hx, tuple)
                    else (hx.index_select(1, input.sorted_indices))
                )
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"{type(self).__name__}: input must be 2-D (unbatched) or 3-D, got {input.dim()}-D")
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
            length, batch = x.shape[:2]
            data, sizes = x.reshape(length * batch, x.shape[2]), [batch] * length
        h0, c0, _ = self._initial_states(hx, batch, torch.float32)
        h_n, c_n = [], []
        self._ops = {}
        step_ops = _step_ops(self.mode, self.hidden_size, self.out_size)
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                data = F.dropout(data, p=self.dropout, training=True)
            outs = []
            for direction, suffix in enumerate(self.suffixes):
                index = layer * len(self.suffixes) + direction
                name = f"l{layer}{suffix}"
                gi = getattr(self, f"ih_{name}")(data)  # every time step in one tiled call
                c = None if c0 is None else c0[index]
                out, h, c = self._direction(gi, sizes, h0[index], c, name, reverse=direction == 1)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
                _add_ops(self._ops, step_ops, data.shape[0])
            data = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        h_out = torch.stack(h_n)
        c_out = torch.stack(c_n) if self.mode == "LSTM" else None
        if packed:
            if input.unsorted_indices is not None:
                h_out = h_out.index_select(1, input.unsorted_indices)
                c_out = None if c_out is None else c_out.index_select(1, input.unsorted_indices)
            output: object = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        else:
            output = data.reshape(len(sizes), batch, -1)
            if unbatched:
                output, h_out = output.squeeze(1), h_out.squeeze(1)
                c_out = None if c_out is None else c_out.squeeze(1)
            elif self.batch_first:
                output = output.transpose(0, 1)
        return output, ((h_out, c_out) if self.mode == "LSTM" else h_out)

    def digital_ops(self, inputs: tuple, output: object) -> dict[str, float]:
        """The gates and state updates of the last call, every layer, direction and time step (the tiled
        products are counted by their own hooks)."""
        return dict(self._ops)

    def extra_repr(self) -> str:
        return (
            f"{self.mode}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}, batch_first={self.batch_first}, proj_size={self.proj_size}"
        )


class TiledRecurrentCell(nn.Module):
    """nn.RNNCell / nn.LSTMCell / nn.GRUCell on tiles (build it with ``convert_recurrent``); same forward:
    input (N, H_in) or (H_in,), hx -> h' (or (h', c') for an LSTM cell)."""

    def __init__(self, module: nn.RNNCellBase, make_tiled: MakeTiled) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.bias = module.input_size, module.hidden_size, module.bias
        nonlinearity = getattr(module, "nonlinearity", None)
        self.mode = _CELL_MODES.get(type(module), f"RNN_{str(nonlinearity).upper()}")
        if self.mode not in _GATES:
            raise ValueError(f"convert_recurrent: {type(module).__name__} nonlinearity {nonlinearity!r}")
        for kind in ("ih", "hh"):
            weight, bias = getattr(module, f"weight_{kind}"), getattr(module, f"bias_{kind}")
            setattr(self, kind, make_tiled(weight, bias, kind))
        self._ops: dict[str, float] = {}

    def forward(self, input: torch.Tensor, hx: object = None) -> object:  # noqa: A002
        if input.dim() not in (1, 2):
            raise ValueError(f"{type(self).__name__}: input must be 1-D or 2-D, got {input.dim()}-D")
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        lstm = self.mode == "LSTM"
        if hx is None:
            zeros = torch.zeros(x.shape[0], self.hidden_size)
            h, c = zeros, (zeros if lstm else None)
        else:
            h, c = hx if lstm else (hx, None)
            if unbatched:
                h, c = h.unsqueeze(0), (None if c is None else c.unsqueeze(0))
            for name, state in (("h", h), ("c", c)):
                if state is not None and tuple(state.shape) != (x.shape[0], self.hidden_size):
                    raise ValueError(
                        f"{type(self).__name__}: {name} has shape {tuple(state.shape)}, "
                        f"expected {(x.shape[0], self.hidden_size)}"
                    )
            h, c = h.to(torch.float32), (None if c is None else c.to(torch.float32))
        h, c = _step(self.mode, self.ih(x), h, c, self.hh, None)
        self._ops = {}
        _add_ops(self._ops, _step_ops(self.mode, self.hidden_size, self.hidden_size), x.shape[0])
        if unbatched:
            h, c = h.squeeze(0), (None if c is None else c.squeeze(0))
        return (h, c) if lstm else h

    def digital_ops(self, inputs: tuple, output: object) -> dict[str, float]:
        """The gates and state update of the last call (the tiled products are counted by their own hooks)."""
        return dict(self._ops)

    def extra_repr(self) -> str:
        return f"{self.mode}, {self.input_size}, {self.hidden_size}, bias={self.bias}"


def convert_recurrent(
    module: nn.RNNBase | nn.RNNCellBase, make_tiled: MakeTiled
) -> TiledRecurrent | TiledRecurrentCell:
    """The tiled replacement of an nn.RNN, nn.LSTM, nn.GRU or one of their cells; ``make_tiled(weight (out,
    in), bias or None, name)`` programs each matrix (names in the module docstring). ``module`` is not
    modified; its training mode is kept."""
    if isinstance(module, nn.RNNBase):
        if module.mode not in _GATES:
            raise ValueError(f"convert_recurrent: unknown recurrent mode {module.mode!r}")
        tiled: nn.Module = TiledRecurrent(module, make_tiled)
    elif isinstance(module, nn.RNNCellBase):
        tiled = TiledRecurrentCell(module, make_tiled)
    else:
        raise TypeError(f"convert_recurrent needs an nn.RNN/LSTM/GRU or a cell, got {type(module).__name__}")
    from crossbar.compiler import DIGITAL_REASON  # the compiler imports this module

    setattr(tiled, DIGITAL_REASON, "gates and state updates: elementwise, digital; its matrices on tiles")
    return tiled.train(module.training)
