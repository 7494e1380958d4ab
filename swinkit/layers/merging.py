"""Patch merging over the two spatial axes (time is never merged)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinkit.layers.recompute import layer_norm_linear


class PatchMerging(nn.Module):
    """(B, *lead, H, W, C) -> (B, *lead, ceil(H/2), ceil(W/2), out_dim).

    Odd H/W are zero-padded at the end; the 2x2 neighbours are concatenated in the official
    order (h, w) parity (0,0), (1,0), (0,1), (1,1), normalised over 4C and reduced by a
    bias-free linear layer.
    """

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-3], x.shape[-2]
        if height % 2 or width % 2:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :],
                       x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], dim=-1)
        return layer_norm_linear(x, self.norm, self.reduction)  # training keeps x, not its normalised copy
