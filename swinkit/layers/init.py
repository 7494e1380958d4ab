"""Weight initialisation shared by the families."""
from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def init_linear_and_norm(module: nn.Module) -> None:
    """Linear: truncated normal(0, 0.02) weights (bounds +-2, i.e. 100 std: a clamped draw is the same law,
    and much faster), zero bias. LayerNorm: weight 1, bias 0. Other modules are left alone."""
    if isinstance(module, nn.Linear):
        module.weight.normal_(0.0, 0.02).clamp_(-2.0, 2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
