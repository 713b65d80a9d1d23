"""Multi-head attention with its weight matrices on tiles: ``convert_attention(nn.MultiheadAttention)``.

The query, key and value in-projections and the output projection are matrix products of activations with
weights, so each is one programmed matrix (a ``TiledLinear``): ``q_proj`` (E x E), ``k_proj`` (E x kdim),
``v_proj`` (E x vdim), ``out_proj`` (E x E). A packed ``in_proj_weight`` (3E x E) is split into its three
E x E blocks, each programmed on its own, so that cross-attention drives only the tiles of the projection it
needs (self-attention drives all three with the same input). The attention products Q K^T and A V multiply
activations by activations, not by stored weights: they stay digital, with the softmax, the masks and the
dropout, and ``digital_ops`` counts them for ``crossbar.estimate``.

``TiledMultiheadAttention`` is an ``nn.MultiheadAttention`` (code that looks for attention modules by type
still finds it), with the same attributes and the same ``forward``. It has no ``in_proj_weight`` or
``in_proj_bias`` (both None; the biases live in the tiled projections): torch's fused kernels
(``torch._native_multi_head_attention`` and the fast path of ``nn.TransformerEncoderLayer``) need those
tensors and are therefore never taken, so every projection of a compiled transformer runs through its tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (torch's own spelling)

if TYPE_CHECKING:
    from crossbar.compiler import MakeTiled

BYTES = 4  # float32 operands of the digital attention (memory_bytes of digital_ops)


class TiledMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose q/k/v/out projections are tiled layers; build it with
    ``convert_attention``. Inputs and outputs as in torch: query (L, N, E) or (N, L, E) with ``batch_first``
    or (L, E) unbatched, key (S, N, kdim), value (S, N, vdim); returns (attn_output, attn_weights or None)."""

    def __init__(self, module: nn.MultiheadAttention, make_tiled: MakeTiled) -> None:
        nn.Module.__init__(self)
        for attribute in ("embed_dim", "kdim", "vdim", "_qkv_same_embed_dim", "num_heads", "dropout"):
            setattr(self, attribute, getattr(module, attribute))
        self.batch_first, self.head_dim, self.add_zero_attn = module.batch_first, module.head_dim, module.add_zero_attn
        for name in ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            self.register_parameter(name, None)
        if module.bias_k is not None:
            self.bias_k = nn.Parameter(module.bias_k.detach().clone())
            self.bias_v = nn.Parameter(module.bias_v.detach().clone())
        else:
            self.bias_k = self.bias_v = None
        embed = module.embed_dim
        if module._qkv_same_embed_dim:
            weights = module.in_proj_weight.detach().split(embed)
        else:
            weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
        biases = (None,) * 3 if module.in_proj_bias is None else module.in_proj_bias.detach().split(embed)
        self.q_proj = make_tiled(weights[0], biases[0], "q_proj")
        self.k_proj = make_tiled(weights[1], biases[1], "k_proj")
        self.v_proj = make_tiled(weights[2], biases[2], "v_proj")
        self.out_proj = make_tiled(module.out_proj.weight, module.out_proj.bias, "out_proj")
        self._ops: dict[str, float] = {}

    def forward(  # noqa: C901 (torch's forward, step by step)
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if query.is_nested or key.is_nested or value.is_nested:
            raise ValueError(f"{type(self).__name__}: nested tensor inputs are not supported")
        is_batched = F._mha_shape_check(query, key, value, key_padding_mask, attn_mask, self.num_heads)
        key_padding_mask = F._canonical_mask(
            mask=key_padding_mask,
            mask_name="key_padding_mask",
            other_type=F._none_or_dtype(attn_mask),
            other_name="attn_mask",
            target_type=query.dtype,
        )
        attn_mask = F._canonical_mask(
            mask=attn_mask,
            mask_name="attn_mask",
            other_type=None,
            other_name="",
            target_type=query.dtype,
            check_other=False,
        )
        if self.batch_first and is_batched:
            query, key, value = _each_once(lambda t: t.transpose(1, 0), query, key, value)
        if not is_batched:
            query, key, value = _each_once(lambda t: t.unsqueeze(1), query, key, value)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        tgt_len, bsz, _ = query.shape
        src_len = key.shape[0]
        if key.shape[:2] != value.shape[:2]:
            raise ValueError(f"key's sequence and batch dims {tuple(key.shape[:2])} do not match value's")
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint (nn.MultiheadAttention semantics)")
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None  # the causal hint alone, as torch passes it to scaled_dot_product_attention
        elif key_padding_mask is not None:
            is_causal = False
        heads, head_dim = self.num_heads, self.head_dim

        q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)

        if attn_mask is not None:
            if attn_mask.dim() == 2:
                if attn_mask.shape != (tgt_len, src_len):
                    raise RuntimeError(
                        f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be {(tgt_len, src_len)}."
                    )
                attn_mask = attn_mask.unsqueeze(0)
            elif attn_mask.shape != (bsz * heads, tgt_len, src_len):
                expected = (bsz * heads, tgt_len, src_len)
                raise RuntimeError(f"The shape of the 3D attn_mask is {attn_mask.shape}, but should be {expected}.")
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.repeat(1, bsz, 1).to(k.dtype)])
            v = torch.cat([v, self.bias_v.repeat(1, bsz, 1).to(v.dtype)])
            attn_mask, key_padding_mask = _pad_masks(attn_mask, key_padding_mask)
        q = q.view(tgt_len, bsz * heads, head_dim).transpose(0, 1)
        k = k.view(k.shape[0], bsz * heads, head_dim).transpose(0, 1)
        v = v.view(v.shape[0], bsz * heads, head_dim).transpose(0, 1)
        if self.add_zero_attn:
            zeros = torch.zeros((bsz * heads, 1, head_dim), dtype=k.dtype, device=k.device)
            k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
            attn_mask, key_padding_mask = _pad_masks(attn_mask, key_padding_mask)
        src_len = k.size(1)
        if key_padding_mask is not None:
            if key_padding_mask.shape != (bsz, src_len):
                raise ValueError(
                    f"key_padding_mask: shape {tuple(key_padding_mask.shape)}, expected (batch, source length)"
                    f" = {(bsz, src_len)}"
                )
            padding = key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, heads, -1, -1)
            padding = padding.reshape(bsz * heads, 1, src_len)
            attn_mask = padding if attn_mask is None else attn_mask + padding
        if attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype)  # the tiles compute in float32, whatever the input's precision
        dropout_p = self.dropout if self.training else 0.0
        embed = self.embed_dim

        if need_weights:
            q_scaled = q * math.sqrt(1.0 / float(head_dim))
            scores = k.transpose(-2, -1)
            weights = torch.bmm(q_scaled, scores) if attn_mask is None else torch.baddbmm(attn_mask, q_scaled, scores)
            weights = F.softmax(weights, dim=-1)
            if dropout_p > 0.0:
                weights = F.dropout(weights, p=dropout_p)
            attn = torch.bmm(weights, v).transpose(0, 1).reshape(tgt_len * bsz, embed)
            weights = weights.view(bsz, heads, tgt_len, src_len)
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            if attn_mask is not None:
                attn_mask = (
                    attn_mask.unsqueeze(0)
                    if attn_mask.size(0) == 1 and attn_mask.dim() == 3
                    else attn_mask.view(bsz, heads, -1, src_len)
                )
            q4, k4, v4 = (t.view(bsz, heads, -1, head_dim) for t in (q, k, v))
            attn = F.scaled_dot_product_attention(q4, k4, v4, attn_mask, dropout_p, is_causal)
            attn = attn.permute(2, 0, 1, 3).reshape(bsz * tgt_len, embed)
            weights = None
        output = self.out_proj(attn).view(tgt_len, bsz, -1)
        self._ops = _attention_ops(bsz, heads, tgt_len, src_len, head_dim, attn_mask is not None, need_weights)
        if not is_batched:
            output = output.squeeze(1)
            weights = None if weights is None else weights.squeeze(0)
        elif self.batch_first:
            output = output.transpose(1, 0)
        return output, weights

    def digital_ops(self, inputs: tuple, output: object) -> dict[str, float]:
        """The digital work of the last call (counted right after it by ``crossbar.estimate``): scaling Q, the
        products Q K^T and A V (MACs), the masks, the softmax and the averaging of the returned weights; the
        projections are tiled layers, counted by their own hooks."""
        return dict(self._ops)


def _each_once(fn: Callable[[torch.Tensor], torch.Tensor], *tensors: torch.Tensor) -> list[torch.Tensor]:
    """``fn`` of each tensor, once per distinct tensor: a self-attention's query, key and value stay one
    object, so ``crossbar.estimate`` sees the projections read one activation (converted once by the DACs)."""
    done: dict[int, torch.Tensor] = {}
    for t in tensors:
        if id(t) not in done:
            done[id(t)] = fn(t)
    return [done[id(t)] for t in tensors]


def _pad_masks(
    attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One more source position (bias_k/bias_v or the zero attention), unmasked."""
    return (
        None if attn_mask is None else F.pad(attn_mask, (0, 1)),
        None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1)),
    )


def _attention_ops(
    bsz: int, heads: int, tgt_len: int, src_len: int, head_dim: int, masked: bool, need_weights: bool
) -> dict[str, float]:
    """Operation counts of the digital attention of one call: N x H heads, L queries, S keys of size d."""
    scores = float(bsz * heads * tgt_len * src_len)
    queries = float(bsz * heads * tgt_len * head_dim)
    keys = float(bsz * heads * src_len * head_dim)
    return {
        "mac": 2.0 * scores * head_dim,  # Q K^T and A V
        "mul": queries + scores,  # 1/sqrt(d) on Q, the softmax's normalisation
        "add": scores * (1.0 + masked + (need_weights and heads > 1)),  # softmax sum, mask, head average
        "nonlinear": scores,  # exp
        "memory_bytes": BYTES * (2.0 * queries + 2.0 * keys + 2.0 * scores),
    }


def convert_attention(module: nn.MultiheadAttention, make_tiled: MakeTiled) -> TiledMultiheadAttention:
    """The tiled replacement of ``module``: ``make_tiled(weight (out, in), bias or None, name)`` programs each
    of the four projections (names ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``). ``module`` is not
    modified; its training mode is kept."""
    if not isinstance(module, nn.MultiheadAttention):
        raise TypeError(f"convert_attention needs an nn.MultiheadAttention, got {type(module).__name__}")
    if isinstance(module, TiledMultiheadAttention):
        raise TypeError("convert_attention: the module is already tiled")
    from crossbar.compiler import DIGITAL_REASON  # the compiler imports this module

    tiled = TiledMultiheadAttention(module, make_tiled)
    setattr(tiled, DIGITAL_REASON, "Q K^T, softmax, A V: activation x activation, digital; projections on tiles")
    return tiled.train(module.training)
