"""Adapting a native-key state dict to a model that differs from the checkpoint's."""
from __future__ import annotations

import torch
import torch.nn as nn


def adapt_state_dict(state: dict[str, torch.Tensor], model: nn.Module, source_format: str, report,
                     **options) -> dict[str, torch.Tensor]:
    """Return ``state`` adapted to ``model`` (entries changed are recorded in ``report``)."""
    if options:
        raise TypeError(f"unknown adaptation option(s): {sorted(options)}")
    return state
