"""Window multi-head self-attention with a relative position bias, for any number of axes."""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinkit.layers.recompute import layer_norm_linear, use_recompute_functions
from swinkit.layers.windows import relative_position_index, sliced_relative_position_index


class WindowAttention(nn.Module):
    """Attention inside each window: (B, num_windows, N, C) -> same shape.

    ``table_window`` is the window the bias table is built for: one row per relative offset,
    (2w-1) per axis, first axis major. ``sliced_index`` reproduces the official Video Swin
    ``relative_position_index[:N, :N]`` for windows smaller than the table's.
    """

    def __init__(self, dim: int, num_heads: int, table_window: tuple[int, ...], qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, sliced_index: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.table_window = tuple(table_window)
        self.sliced_index = sliced_index
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(math.prod(2 * w - 1 for w in self.table_window), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._bias_cache: dict[tuple, tuple] = {}  # attention_bias() results while autograd is off

    def bias_index(self, window: tuple[int, ...]) -> torch.Tensor:
        """(N, N) table rows used for ``window``."""
        if self.sliced_index:
            return sliced_relative_position_index(self.table_window, math.prod(window))
        return relative_position_index(window, self.table_window)

    def relative_bias(self, window: tuple[int, ...]) -> torch.Tensor:
        """(num_heads, N, N) relative position bias for ``window``."""
        index = self.bias_index(window).to(self.relative_position_bias_table.device)
        tokens = index.shape[0]
        bias = torch.index_select(self.relative_position_bias_table, 0, index.reshape(-1))  # backward: index_add, faster than index_put
        return bias.view(tokens, tokens, self.num_heads).permute(2, 0, 1)

    def attention_bias(self, window: tuple[int, ...], shift_mask: torch.Tensor | None,
                       dtype: torch.dtype | None = None) -> torch.Tensor:
        """Relative position bias plus shift mask: (nH, N, N), or (nW, nH, N, N) with a (nW, N, N) mask.

        Without autograd (``torch.no_grad`` / ``inference_mode``) the sum is cached on the module
        and rebuilt only when the table, window, mask or dtype changes; with autograd it is built
        fresh so that gradients reach the table, and carries a :class:`BiasRebuild` (attribute
        ``_swinkit_rebuild``) with which :class:`BiasedWindowAttention` rebuilds it in backward.
        """
        table = self.relative_position_bias_table
        dtype = dtype or table.dtype
        if torch.compiler.is_compiling():
            return self._build_bias(window, shift_mask, dtype)
        if torch.is_grad_enabled():
            bias = self._build_bias(window, shift_mask, dtype)
            if bias.requires_grad:  # BiasedWindowAttention rebuilds it in backward instead of keeping it
                bias._swinkit_rebuild = BiasRebuild(self, window, shift_mask, dtype)
            return bias
        key = (tuple(window), None if shift_mask is None else (id(shift_mask), shift_mask.shape), dtype,
               table.device, table.data_ptr(), table._version)
        cache = self._bias_cache
        entry = cache.get(key)
        if entry is None:
            if len(cache) >= 4:
                cache.clear()
            # the entry holds the mask so that its id() cannot be reused while cached
            entry = cache[key] = (shift_mask, self._build_bias(window, shift_mask, dtype))
        return entry[1]

    def _build_bias(self, window: tuple[int, ...], shift_mask: torch.Tensor | None,
                    dtype: torch.dtype) -> torch.Tensor:
        """:meth:`attention_bias` built anew, with autograd reaching the table when it is on."""
        bias = self.relative_bias(window)
        if shift_mask is not None:
            bias = bias.unsqueeze(0) + shift_mask.unsqueeze(1).to(bias.dtype)
        return bias.to(dtype).contiguous()

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """x (B, nW, N, C); attn_bias (nH, N, N) or (nW, nH, N, N): bias plus shift mask."""
        batch, num_windows, tokens, channels = x.shape
        out = self.attend(x.reshape(batch * num_windows, tokens, channels), attn_bias)
        return out.view(batch, num_windows, tokens, channels)

    def attend(self, windows: torch.Tensor, attn_bias: torch.Tensor, norm: nn.LayerNorm | None = None) -> torch.Tensor:
        """windows (B * nW, N, C), sample-major -> (B * nW, N, C); ``norm`` is applied first if given.

        Runs ``scaled_dot_product_attention`` on 4-D (windows, heads, N, head_dim) views of the
        qkv projection, where PyTorch has fused kernels. A per-window bias (nW, nH, N, N) is
        applied one sample at a time, so it is never expanded over the batch. With autograd on,
        :class:`BiasedWindowAttention` keeps only q, k, v for the backward pass.
        """
        qkv = self.qkv(windows) if norm is None else layer_norm_linear(windows, norm, self.qkv)
        return self.proj_drop(self.proj(self.attend_qkv(qkv, attn_bias)))

    def attend_qkv(self, qkv: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """The attention itself, before the output projection: qkv (B * nW, N, 3C) -> (B * nW, N, C)."""
        count, tokens, _ = qkv.shape
        bias = attn_bias if attn_bias.dtype == qkv.dtype else attn_bias.to(qkv.dtype)
        dropout = self.attn_drop if self.training else 0.0
        if dropout == 0.0 and _recompute_in_backward(qkv, bias):
            out = BiasedWindowAttention.apply(qkv, bias, self.num_heads, self.scale,
                                              getattr(bias, "_swinkit_rebuild", None))
        else:
            out = window_sdpa(*split_heads(qkv, self.num_heads), bias, self.scale, dropout)
        return out.reshape(count, tokens, self.num_heads * self.head_dim)


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """qkv (B * nW, N, 3C) -> q, k, v, each a (B * nW, nH, N, hd) view of it."""
    count, tokens, channels3 = qkv.shape
    return qkv.view(count, tokens, 3, num_heads, channels3 // (3 * num_heads)).permute(2, 0, 3, 1, 4).unbind(0)


def _recompute_in_backward(qkv: torch.Tensor, bias: torch.Tensor) -> bool:
    """Use :class:`BiasedWindowAttention` on CPU in eager autograd: PyTorch's fused CPU kernel
    gives no gradient for the bias (its math fallback keeps every attention matrix). CUDA's
    memory-efficient kernel differentiates the bias itself."""
    return use_recompute_functions(qkv) and qkv.device.type == "cpu" and (qkv.requires_grad or bias.requires_grad)


def window_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float,
                dropout: float = 0.0) -> torch.Tensor:
    """softmax(scale q k^T + bias) v per window: q, k, v (B * nW, nH, N, hd) -> (B * nW, N, nH, hd).

    ``bias`` is (nH, N, N) for every window, or (nW, nH, N, N) for the windows of each sample.
    """
    count = q.shape[0]
    if bias.dim() == 4 and torch.compiler.is_compiling():
        # one 5-D call in traced graphs: no loop over a symbolic batch, no guard on the batch size
        step = bias.shape[0]
        out = F.scaled_dot_product_attention(q.unflatten(0, (-1, step)), k.unflatten(0, (-1, step)),
                                             v.unflatten(0, (-1, step)), attn_mask=bias, dropout_p=dropout,
                                             scale=scale)
        return out.transpose(2, 3).flatten(0, 1).contiguous()
    if bias.dim() == 3 or bias.shape[0] == count:
        mask = bias.unsqueeze(0) if bias.dim() == 3 else bias
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
        return out.transpose(1, 2).contiguous()
    step = bias.shape[0]
    if count % step:
        raise ValueError(f"{count} windows do not split into samples of {step} windows")
    return torch.cat([
        F.scaled_dot_product_attention(q[i:i + step], k[i:i + step], v[i:i + step], attn_mask=bias,
                                       dropout_p=dropout, scale=scale).transpose(1, 2)
        for i in range(0, count, step)])


def window_groups(count: int, attn_bias: torch.Tensor, max_windows: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Split ``count`` windows (sample-major) into groups of at most ``max_windows`` (at least one).

    Yields (first window, end window, bias for the group). A per-window bias (nW, nH, N, N) is
    sliced to the group's windows; groups never straddle two samples unless they hold whole ones.
    """
    want = max(1, max_windows)
    if attn_bias.dim() == 4:
        per_sample = attn_bias.shape[0]
        if want >= per_sample:
            want = want // per_sample * per_sample
        else:
            want = max(d for d in range(1, want + 1) if per_sample % d == 0)
    for first in range(0, count, want):
        last = min(first + want, count)
        bias = attn_bias
        if attn_bias.dim() == 4 and want < attn_bias.shape[0]:
            offset = first % attn_bias.shape[0]
            bias = attn_bias[offset:offset + want]
        yield first, last, bias


BACKWARD_CHUNK_ELEMENTS = 1 << 20  # attention-matrix elements per group of windows in the attention backward


class BiasRebuild:
    """Rebuilds a :meth:`WindowAttention.attention_bias` result from the current table, without
    autograd, so that backward need not keep the (nW, nH, N, N) bias alive from forward to backward.

    Like a saved tensor, it refuses to run once the table has been modified in place.
    """

    def __init__(self, attn: WindowAttention, window: tuple[int, ...], shift_mask: torch.Tensor | None,
                 dtype: torch.dtype):
        self.attn, self.window, self.shift_mask, self.dtype = attn, tuple(window), shift_mask, dtype
        self.table = attn.relative_position_bias_table
        self.version = self.table._version

    def __call__(self) -> torch.Tensor:
        if self.attn.relative_position_bias_table is not self.table or self.table._version != self.version:
            raise RuntimeError("the relative position bias table was modified in place (or replaced) between "
                               "forward and backward; the attention bias cannot be rebuilt for the gradient")
        with torch.no_grad():
            return self.attn._build_bias(self.window, self.shift_mask, self.dtype)


class BiasedWindowAttention(torch.autograd.Function):
    """:func:`window_sdpa` on the heads of a qkv projection, whose backward recomputes the
    attention weights: qkv (B * nW, N, 3C), bias (nH, N, N) or (nW, nH, N, N) -> (B * nW, N, nH, hd).

    It saves qkv only (no (windows, heads, N, N) tensor), returns the gradient of the bias (summed
    over the batch), which the fused CPU kernels do not provide, and writes the q, k and v
    gradients straight into one tensor laid out like qkv. With ``rebuild`` (a callable giving the
    bias again) it does not keep the bias either.
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, bias: torch.Tensor, num_heads: int, scale: float,
                rebuild: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        if rebuild is None:
            ctx.save_for_backward(qkv, bias)
        else:
            ctx.save_for_backward(qkv)
        ctx.num_heads, ctx.scale, ctx.rebuild = num_heads, scale, rebuild
        # detached: PyTorch picks its fused kernel only for inputs that do not require grad
        return window_sdpa(*split_heads(qkv.detach(), num_heads), bias.detach(), scale)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.rebuild is None:
            qkv, bias = ctx.saved_tensors
        else:
            (qkv,), bias = ctx.saved_tensors, ctx.rebuild()
        scale = ctx.scale
        q, k, v = split_heads(qkv, ctx.num_heads)
        count, heads, tokens, _ = q.shape
        grad_out = grad_out.transpose(1, 2)  # (B * nW, nH, N, hd)
        grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
        grad_q, grad_k, grad_v = split_heads(grad_qkv, heads)
        grad_bias = torch.zeros_like(bias) if ctx.needs_input_grad[1] else None
        # a few windows at a time: the recomputed (windows, nH, N, N) tensors stay small
        for first, last, group_bias in window_groups(count, bias, BACKWARD_CHUNK_ELEMENTS // (heads * tokens * tokens)):
            qs, ks, vs, grads = q[first:last], k[first:last], v[first:last], grad_out[first:last]
            groups = group_bias.shape[0] if group_bias.dim() == 4 else 1  # windows per sample with their own bias
            logits = torch.matmul(qs, ks.transpose(-2, -1)).mul_(scale)
            logits.view(-1, groups, heads, tokens, tokens).add_(group_bias)
            probs = torch.softmax(logits, dim=-1)
            del logits
            grad_v[first:last] = torch.matmul(probs.transpose(-2, -1), grads)
            grad_probs = torch.matmul(grads, vs.transpose(-2, -1))
            grad_logits = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            del grad_probs, probs
            if grad_bias is not None:
                summed = grad_logits.view(-1, groups, heads, tokens, tokens).sum(0)
                if bias.dim() == 3:
                    grad_bias += summed[0]
                else:
                    offset = first % bias.shape[0]
                    grad_bias[offset:offset + groups] += summed
            torch.mul(torch.matmul(grad_logits, ks), scale, out=grad_q[first:last])
            torch.mul(torch.matmul(grad_logits.transpose(-2, -1), qs), scale, out=grad_k[first:last])
        return grad_qkv, grad_bias, None, None, None
