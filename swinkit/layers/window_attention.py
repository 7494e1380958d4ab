"""Window multi-head self-attention with a relative position bias, for any number of axes."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinkit.layers.windows import relative_position_index


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
            tokens = math.prod(window)
            return relative_position_index(self.table_window)[:tokens, :tokens]
        return relative_position_index(window, self.table_window)

    def relative_bias(self, window: tuple[int, ...]) -> torch.Tensor:
        """(num_heads, N, N) relative position bias for ``window``."""
        index = self.bias_index(window).to(self.relative_position_bias_table.device)
        tokens = index.shape[0]
        bias = self.relative_position_bias_table[index.reshape(-1)]
        return bias.view(tokens, tokens, self.num_heads).permute(2, 0, 1)

    def attention_bias(self, window: tuple[int, ...], shift_mask: torch.Tensor | None,
                       dtype: torch.dtype | None = None) -> torch.Tensor:
        """Relative position bias plus shift mask: (nH, N, N), or (nW, nH, N, N) with a (nW, N, N) mask.

        Without autograd (``torch.no_grad`` / ``inference_mode``) the sum is cached on the module
        and rebuilt only when the table, window, mask or dtype changes; with autograd it is built
        fresh so that gradients reach the table.
        """
        table = self.relative_position_bias_table
        dtype = dtype or table.dtype
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._build_bias(window, shift_mask, dtype)
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
        bias = self.relative_bias(window)
        if shift_mask is not None:
            bias = bias.unsqueeze(0) + shift_mask.unsqueeze(1).to(bias.dtype)
        return bias.to(dtype).contiguous()

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """x (B, nW, N, C); attn_bias (nH, N, N) or (nW, nH, N, N): bias plus shift mask."""
        batch, num_windows, tokens, channels = x.shape
        out = self.attend(x.reshape(batch * num_windows, tokens, channels), attn_bias)
        return out.view(batch, num_windows, tokens, channels)

    def attend(self, windows: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """windows (B * nW, N, C), sample-major -> (B * nW, N, C).

        Runs ``scaled_dot_product_attention`` on 4-D (windows, heads, N, head_dim) views of the
        qkv projection, where PyTorch has fused kernels. A per-window bias (nW, nH, N, N) is
        applied one sample at a time, so it is never expanded over the batch.
        """
        count, tokens, channels = windows.shape
        qkv = self.qkv(windows).view(count, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B * nW, nH, N, hd)
        mask = attn_bias if attn_bias.dtype == q.dtype else attn_bias.to(q.dtype)
        dropout = self.attn_drop if self.training else 0.0
        per_window = mask.dim() == 4
        if not per_window or mask.shape[0] == count:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask if per_window else mask.unsqueeze(0),
                                                 dropout_p=dropout, scale=self.scale)
            out = out.transpose(1, 2).reshape(count, tokens, channels)
        else:
            step = mask.shape[0]
            if count % step:
                raise ValueError(f"{count} windows do not split into samples of {step} windows")
            out = torch.cat([
                F.scaled_dot_product_attention(q[i:i + step], k[i:i + step], v[i:i + step], attn_mask=mask,
                                               dropout_p=dropout, scale=self.scale).transpose(1, 2)
                for i in range(0, count, step)]).view(count, tokens, channels)
        return self.proj_drop(self.proj(out))
