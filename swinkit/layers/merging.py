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
        # (.., H/2, h parity, W/2, w parity, C) -> (.., H/2, W/2, w parity, h parity, C): the four
        # neighbours in the official order, in one copy (and one copy back in backward)
        *lead, height, width, channels = x.shape
        x = x.reshape(*lead, height // 2, 2, width // 2, 2, channels).movedim(-4, -2)
        x = x.reshape(*lead, height // 2, width // 2, 4 * channels)
        return layer_norm_linear(x, self.norm, self.reduction)  # training keeps x, not its normalised copy
