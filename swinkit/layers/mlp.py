"""Transformer feed-forward block."""
from __future__ import annotations

import torch
import torch.nn as nn


class Mlp(nn.Module):
    """Linear(C, hidden) -> GELU -> Dropout -> Linear(hidden, C) -> Dropout on (..., C)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.activate(self.fc1(x)))))

    def activate(self, hidden: torch.Tensor) -> torch.Tensor:
        """GELU; without autograd it overwrites ``hidden`` (one large temporary fewer)."""
        if torch.is_grad_enabled() or not isinstance(self.act, nn.GELU):
            return self.act(hidden)
        return torch.ops.aten.gelu_(hidden, approximate=self.act.approximate)
