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

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """x (B, nW, N, C); attn_bias (nH, N, N) or (nW, nH, N, N): bias plus shift mask."""
        batch, num_windows, tokens, channels = x.shape
        qkv = self.qkv(x).view(batch, num_windows, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, nW, nH, N, hd)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias.to(q.dtype), dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.scale)
        out = out.transpose(2, 3).reshape(batch, num_windows, tokens, channels)
        return self.proj_drop(self.proj(out))
