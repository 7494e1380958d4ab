"""Window multi-head self-attention with a relative position bias, for any number of axes."""
from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinkit.layers import native
from swinkit.layers.recompute import layer_norm_linear, use_recompute_functions
from swinkit.layers.windows import relative_position_index, sliced_relative_position_index
from swinkit.layers.workspace import Workspace, scratch


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
        # attention_bias() results (and the table they came from), autograd off
        self._bias_cache: dict[tuple, tuple] = {}

    def bias_index(self, window: tuple[int, ...]) -> torch.Tensor:
        """(N, N) table rows used for ``window``."""
        if self.sliced_index:
            return sliced_relative_position_index(self.table_window, math.prod(window))
        return relative_position_index(window, self.table_window)

    def relative_bias(self, window: tuple[int, ...]) -> torch.Tensor:
        """(num_heads, N, N) relative position bias for ``window``."""
        table = self.relative_position_bias_table
        return gather_bias(table, self.bias_index(window).to(table.device))

    def attention_bias(self, window: tuple[int, ...], shift_mask: torch.Tensor | None,
                       dtype: torch.dtype | None = None) -> torch.Tensor:
        """Relative position bias plus shift mask: (nH, N, N), or (nW, nH, N, N) with a (nW, N, N) mask.

        Without autograd (``torch.no_grad`` / ``inference_mode``) the sum is cached on the module
        and rebuilt only when the table, window, mask or dtype changes; with autograd it is built
        fresh so that gradients reach the table, and carries what it is made of (attribute
        ``_swinkit_parts``: the table, the (N, N) index and the mask), from which
        :class:`BiasedWindowAttention` rebuilds it in backward instead of keeping it.
        """
        table = self.relative_position_bias_table
        dtype = dtype or table.dtype
        if torch.compiler.is_compiling() or table.is_meta:  # meta: shapes only (FLOP counts), nothing to cache
            return self._build_bias(window, shift_mask, dtype)
        if torch.is_grad_enabled():
            bias = self._build_bias(window, shift_mask, dtype)
            if bias.requires_grad:
                bias._swinkit_parts = (table, self.bias_index(window).to(table.device), shift_mask)
            return bias
        key = (tuple(window), None if shift_mask is None else (id(shift_mask), shift_mask.shape), dtype, table.device)
        cache = self._bias_cache
        entry = cache.get(key)
        # the table is compared by value: fused optimisers and writes through .data change it in place
        # without bumping its version counter
        if entry is None or not torch.equal(entry[1], table):
            if entry is None and len(cache) >= 4:
                cache.clear()
            # the entry holds the mask so that its id() cannot be reused while cached
            entry = cache[key] = (shift_mask, table.detach().clone(), self._build_bias(window, shift_mask, dtype))
        return entry[2]

    def _build_bias(self, window: tuple[int, ...], shift_mask: torch.Tensor | None,
                    dtype: torch.dtype) -> torch.Tensor:
        """:meth:`attention_bias` built anew, with autograd reaching the table when it is on."""
        bias = self.relative_bias(window)  # contiguous: the sum with a mask then comes out contiguous
        if shift_mask is not None:
            bias = with_mask(bias, shift_mask.to(bias.dtype))
        return bias.to(dtype).contiguous()

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """x (B, nW, N, C); attn_bias (nH, N, N) or (nW, nH, N, N): bias plus shift mask."""
        batch, num_windows, tokens, channels = x.shape
        out = self.attend(x.reshape(batch * num_windows, tokens, channels), attn_bias)
        return out.view(batch, num_windows, tokens, channels)

    def attend(self, windows: torch.Tensor, attn_bias: torch.Tensor, norm: nn.LayerNorm | None = None,
               workspace: Workspace | None = None) -> torch.Tensor:
        """windows (B * nW, N, C), sample-major -> (B * nW, N, C); ``norm`` is applied first if given.

        Runs ``scaled_dot_product_attention`` on 4-D (windows, heads, N, head_dim) views of the
        qkv projection, where PyTorch has fused kernels. A per-window bias (nW, nH, N, N) is
        applied one sample at a time, so it is never expanded over the batch. With autograd on,
        :class:`BiasedWindowAttention` keeps only q, k, v for the backward pass (and recomputes the
        attention weights in ``workspace`` buffers, when one is given).
        """
        qkv = self.qkv(windows) if norm is None else layer_norm_linear(windows, norm, self.qkv)
        return self.proj_drop(self.proj(self.attend_qkv(qkv, attn_bias, workspace)))

    def attend_qkv(self, qkv: torch.Tensor, attn_bias: torch.Tensor,
                   workspace: Workspace | None = None) -> torch.Tensor:
        """The attention itself, before the output projection: qkv (B * nW, N, 3C) -> (B * nW, N, C)."""
        count, tokens, _ = qkv.shape
        bias = attn_bias if attn_bias.dtype == qkv.dtype else attn_bias.to(qkv.dtype)
        dropout = self.attn_drop if self.training else 0.0
        if dropout == 0.0 and _recompute_in_backward(qkv, bias):
            # attention_bias() leaves what the bias is made of, for backward to rebuild it from
            table, index, mask = getattr(attn_bias, "_swinkit_parts", (bias, None, None))
            out = BiasedWindowAttention.apply(qkv, table, mask, self.num_heads, self.scale, bias, index, workspace)
        else:
            out = window_sdpa(*split_heads(qkv, self.num_heads), bias, self.scale, dropout, workspace)
        return out.reshape(count, tokens, self.num_heads * self.head_dim)


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """qkv (B * nW, N, 3C) -> q, k, v, each a (B * nW, nH, N, hd) view of it."""
    count, tokens, channels3 = qkv.shape
    return qkv.view(count, tokens, 3, num_heads, channels3 // (3 * num_heads)).permute(2, 0, 3, 1, 4).unbind(0)


def with_mask(bias: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A bias (nH, N, N) or (nW, nH, N, N) plus a shift mask (nW, N, N), the same for every head:
    (nW, nH, N, N)."""
    return bias + mask.unsqueeze(1)


def gather_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Relative position bias from its table: table (R, nH), index (N, N) of rows -> contiguous (nH, N, N).

    Gathered along the transposed table's columns, so each head's (N, N) comes out in place (1.8-2.2x gathering
    (N * N, nH) rows and copying them into head-major order); backward: index_add, faster than index_put."""
    tokens = index.shape[0]
    return torch.index_select(table.t(), 1, index.reshape(-1)).view(table.shape[1], tokens, tokens)


def _recompute_in_backward(qkv: torch.Tensor, bias: torch.Tensor) -> bool:
    """Use :class:`BiasedWindowAttention` on CPU in eager autograd: PyTorch's fused CPU kernel
    gives no gradient for the bias (its math fallback keeps every attention matrix). CUDA's
    memory-efficient kernel differentiates the bias itself."""
    return use_recompute_functions(qkv) and qkv.device.type == "cpu" and (qkv.requires_grad or bias.requires_grad)


def window_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float,
                dropout: float = 0.0, workspace: Workspace | None = None) -> torch.Tensor:
    """softmax(scale q k^T + bias) v per window: q, k, v (B * nW, nH, N, hd) -> (B * nW, N, nH, hd).

    ``bias`` is (nH, N, N) for every window, or (nW, nH, N, N) for the windows of each sample.
    fp32 on CPU without autograd runs swinkit's compiled kernel (:mod:`swinkit.layers.native`); else small
    windows on CPU, many per head, run as batched matrix products (:func:`head_by_head_attention`),
    elsewhere PyTorch's ``scaled_dot_product_attention``.
    """
    count, step = q.shape[0], windows_per_sample(bias)
    if bias.dim() == 4 and torch.compiler.is_compiling():
        # one 5-D call in traced graphs: no loop over a symbolic batch, no guard on the batch size
        out = F.scaled_dot_product_attention(q.unflatten(0, (-1, step)), k.unflatten(0, (-1, step)),
                                             v.unflatten(0, (-1, step)), attn_mask=bias, dropout_p=dropout,
                                             scale=scale)
        return out.transpose(2, 3).flatten(0, 1).contiguous()
    if count % step:
        raise ValueError(f"{count} windows do not split into samples of {step} windows")
    # the compiled kernel, measured alone (2 threads) against the paths it replaces: 1.3-1.9x the batched
    # products on 49-token windows, 1.6-2.4x the fused kernel with fewer windows than heads, 1.2-1.6x the
    # fused kernel on 196-token windows, 1.1x on 392-token ones
    if dropout == 0.0 and native.applies(q, k, v, bias):
        return native.window_attention(q, k, v, bias, scale)
    if dropout == 0.0 and _head_by_head_wins(q, k, v, bias):
        return head_by_head_attention(q, k, v, bias, scale, workspace)
    if bias.dim() == 3 or bias.shape[0] == count:
        mask = bias.unsqueeze(0) if bias.dim() == 3 else bias
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
        return out.transpose(1, 2).contiguous()
    return torch.cat([
        F.scaled_dot_product_attention(q[i:i + step], k[i:i + step], v[i:i + step], attn_mask=bias,
                                       dropout_p=dropout, scale=scale).transpose(1, 2)
        for i in range(0, count, step)])


ATTENTION_CHUNK_ELEMENTS = 1 << 20  # attention-matrix elements per group of windows (explicit products)
HEAD_BY_HEAD_MAX_TOKENS = 64  # windows up to this size: batched matrix products beat the fused CPU kernel


def _head_by_head_wins(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> bool:
    """Measured on CPU (fp32, 2 threads): 49-token windows with at least as many windows as heads run
    1.3-1.5x faster as batched products than in the fused kernel; fewer windows, or 196-token ones,
    slower. Without autograd only (its products write into buffers)."""
    count, heads, tokens, _ = q.shape
    return (q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64) and tokens <= HEAD_BY_HEAD_MAX_TOKENS
            and count >= heads and native.autograd_free((q, k, v, bias)))


def head_by_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float,
                           workspace: Workspace | None = None) -> torch.Tensor:
    """:func:`window_sdpa` as two batched matrix products per head and one softmax over all heads,
    a group of windows at a time.

    q, k, v (B * nW, nH, N, hd), strided views of one qkv projection: each head's (windows, N, hd)
    slice goes to the products as it is (no copy). A group's logits (nH, windows, N, N) and per-head
    outputs are ``workspace`` buffers when one is given. Returns (B * nW, N, nH, hd).
    """
    count, heads, tokens, head_dim = q.shape
    out = q.new_empty(count, tokens, heads, head_dim)
    groups = window_groups(count, windows_per_sample(bias), ATTENTION_CHUNK_ELEMENTS // (heads * tokens * tokens))
    for first, last, windows in groups:
        group_bias = windows_of(bias, windows)
        per_window = group_bias if group_bias.dim() == 4 else group_bias.unsqueeze(0)  # (1 or nW, nH, N, N)
        logits = scratch(workspace, "attn_logits", (heads, last - first, tokens, tokens), q)
        per_head = scratch(workspace, "attn_out", (heads, last - first, tokens, head_dim), q)
        for head in range(heads):
            head_logits = logits[head]  # the bias first, the same for every sample in the group
            head_logits.view(-1, per_window.shape[0], tokens, tokens).copy_(per_window[:, head])
            head_logits.baddbmm_(q[first:last, head], k[first:last, head].transpose(1, 2), alpha=scale)
        probs = torch.ops.aten._softmax.out(logits, -1, False, out=logits)  # row by row: in place is safe
        for head in range(heads):
            torch.bmm(probs[head], v[first:last, head], out=per_head[head])
        out[first:last] = per_head.permute(1, 2, 0, 3)
    return out


def window_groups(count: int, per_sample: int, max_windows: int) -> Iterator[tuple[int, int, slice]]:
    """Split ``count`` windows (sample-major, ``per_sample`` windows per sample with biases of their own,
    1 if all share one) into groups of at most ``max_windows`` (at least one).

    Yields (first window, end window, the group's slice of a per-sample (nW, ...) tensor); groups
    never straddle two samples unless they hold whole ones.
    """
    want = max(1, max_windows)
    if want >= per_sample:
        want = want // per_sample * per_sample
    else:
        want = max(d for d in range(1, want + 1) if per_sample % d == 0)
    width = min(want, per_sample)
    for first in range(0, count, want):
        offset = first % per_sample if want < per_sample else 0
        yield first, min(first + want, count), slice(offset, offset + width)


def windows_of(bias: torch.Tensor, windows: slice) -> torch.Tensor:
    """A group's part of a bias: the ``windows`` slice (from :func:`window_groups`) of a per-window
    (nW, nH, N, N) bias, or a shared (nH, N, N) bias whole."""
    return bias[windows] if bias.dim() == 4 else bias


def windows_per_sample(attn_bias: torch.Tensor) -> int:
    """How many windows of a sample have a bias of their own: nW for (nW, nH, N, N), else 1."""
    return attn_bias.shape[0] if attn_bias.dim() == 4 else 1


class BiasedWindowAttention(torch.autograd.Function):
    """:func:`window_sdpa` on the heads of a qkv projection, whose backward recomputes the
    attention weights: qkv (B * nW, N, 3C), bias (nH, N, N) or (nW, nH, N, N), mask (nW, N, N) or
    None -> (B * nW, N, nH, hd). The logits get ``bias`` plus ``mask`` (broadcast over the heads).

    With ``index`` (N, N), ``bias`` is a relative position table (R, nH) and the (nH, N, N) bias is
    its rows ``index`` (:func:`gather_bias`), gathered again in backward. It saves qkv and what it
    was given, never a (windows, heads, N, N) tensor unless given one; returns the gradient of
    ``bias`` (summed over the batch and, for a table or a 3-D bias, over the windows), which the
    fused CPU kernels do not provide; and writes the q, k and v gradients straight into one tensor
    laid out like qkv. ``combined`` is the (nH, N, N) bias plus mask for the forward pass, when the
    caller has it already. Backward runs swinkit's compiled kernel where it applies (fp32 CPU:
    :func:`swinkit.layers.native.window_attention_backward_`, each (window, head) in cache); elsewhere
    it recomputes the weights a few windows at a time with PyTorch's products, the (windows, nH, N, N)
    tensors in ``workspace`` buffers when one is given (on CPU, fresh ones of that size are page faults in
    every group).
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None, num_heads: int, scale: float,
                combined: torch.Tensor | None = None, index: torch.Tensor | None = None,
                workspace: Workspace | None = None) -> torch.Tensor:
        ctx.save_for_backward(qkv, bias, mask, index)
        ctx.num_heads, ctx.scale, ctx.workspace = num_heads, scale, workspace
        if combined is None:
            combined = bias if index is None else gather_bias(bias, index)
            combined = combined if mask is None else with_mask(combined, mask)
        # detached: PyTorch picks its fused kernel only for inputs that do not require grad
        return window_sdpa(*split_heads(qkv.detach(), num_heads), combined.detach().to(qkv.dtype), scale,
                           workspace=workspace)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        qkv, bias, mask, index = ctx.saved_tensors
        scale = ctx.scale
        q, k, v = split_heads(qkv, ctx.num_heads)
        count, heads, tokens, _ = q.shape
        grad_out = grad_out.transpose(1, 2)  # (B * nW, nH, N, hd)
        grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
        grad_q, grad_k, grad_v = split_heads(grad_qkv, heads)
        relative = bias if index is None else gather_bias(bias, index).to(qkv.dtype)  # contiguous
        mask = None if mask is None else mask.to(qkv.dtype)
        if native.backward_applies(grad_out, q, k, v, relative):
            # swinkit's kernel: every (window, head) in cache, the bias gradient summed per bias window
            combined = relative if mask is None else with_mask(relative, mask)
            grad_windows = windows_per_sample(relative) if ctx.needs_input_grad[1] else 0
            grad_relative = native.window_attention_backward_(grad_q, grad_k, grad_v, grad_out, q, k, v, combined,
                                                              scale, grad_windows)
            grad_relative = None if grad_windows == 0 else grad_relative.view_as(relative)
            return grad_qkv, _table_gradient(grad_relative, bias, index), None, None, None, None, None, None
        grad_relative = torch.zeros_like(relative) if ctx.needs_input_grad[1] else None
        per_sample = max(windows_per_sample(relative), 1 if mask is None else mask.shape[0])
        # a few windows at a time: the recomputed (windows, nH, N, N) tensors stay small
        groups = window_groups(count, per_sample, ATTENTION_CHUNK_ELEMENTS // (heads * tokens * tokens))
        for first, last, windows in groups:
            qs, ks, vs, grads = q[first:last], k[first:last], v[first:last], grad_out[first:last]
            width = windows.stop - windows.start  # distinct windows of a sample in the group
            square = (last - first, heads, tokens, tokens)
            logits = torch.matmul(qs, ks.transpose(-2, -1), out=scratch(ctx.workspace, "attn_logits", square, qs))
            logits.mul_(scale)
            per_window = logits.view(-1, width, heads, tokens, tokens)
            per_window.add_(windows_of(relative, windows))
            if mask is not None:
                per_window.add_(mask[windows].unsqueeze(1))
            probs = torch.ops.aten._softmax.out(logits, -1, False, out=scratch(ctx.workspace, "attn_probs", square, qs))
            del logits, per_window
            grad_v[first:last] = torch.matmul(probs.transpose(-2, -1), grads)
            grad_probs = torch.matmul(grads, vs.transpose(-2, -1),
                                      out=scratch(ctx.workspace, "attn_logits", square, qs))
            grad_logits = torch.ops.aten._softmax_backward_data.out(
                grad_probs, probs, -1, probs.dtype, grad_input=scratch(ctx.workspace, "attn_grad", square, qs))
            del grad_probs, probs
            if grad_relative is not None:
                target = windows_of(grad_relative, windows)
                summed = scratch(ctx.workspace, "attn_bias_grad", tuple(target.shape), target)
                target += torch.sum(grad_logits.view(-1, *target.shape), 0, out=summed)
            torch.mul(torch.matmul(grad_logits, ks), scale, out=grad_q[first:last])
            torch.mul(torch.matmul(grad_logits.transpose(-2, -1), qs), scale, out=grad_k[first:last])
        return grad_qkv, _table_gradient(grad_relative, bias, index), None, None, None, None, None, None


def _table_gradient(grad_relative: torch.Tensor | None, bias: torch.Tensor,
                    index: torch.Tensor | None) -> torch.Tensor | None:
    """The gradient for :class:`BiasedWindowAttention`'s ``bias`` from that of the (nH, N, N) bias: itself, or
    with ``index``, summed back into the rows of the (R, nH) table (the backward of :func:`gather_bias`)."""
    if grad_relative is None or index is None:
        return grad_relative
    # summed into the transposed (nH, R) table, each head's (N * N) gradient as it lies: 3-6x faster than
    # index_add_ of (N * N, nH) rows, which needs a transposed copy and adds nH numbers at a time
    heads = grad_relative.shape[-3]
    per_head = grad_relative.reshape(heads, -1).to(bias.dtype)
    return bias.new_zeros(heads, bias.shape[0]).index_add_(1, index.reshape(-1), per_head).t()
