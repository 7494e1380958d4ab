"""Input shapes of the deploy tools: parsing ``1x3x224x224`` and each family's natural input."""
from __future__ import annotations

import torch.nn as nn

VIDEO_FRAMES = 32  # frames of a Video Swin view in the papers' tables (32 x 224 x 224)


def num_input_axes(model: nn.Module) -> int:
    """2 for image models (B, C, H, W), 3 for video models (B, C, T, H, W)."""
    return 3 if getattr(model, "family", None) == "video_swin" else 2


def parse_shape(text: str, num_axes: int | None = None) -> tuple[int, ...]:
    """``"1x3x224x224"`` -> (1, 3, 224, 224); ``num_axes`` (2 or 3 spatial/temporal axes) fixes the rank."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input shape must be positive integers joined by 'x' such as 1x3x224x224, got {text!r}")
    if num_axes is not None and len(shape) != 2 + num_axes:
        layout = "BxCxTxHxW (a video model)" if num_axes == 3 else "BxCxHxW (an image model)"
        raise ValueError(f"input shape {text!r} has {len(shape)} entries; expected {layout}")
    return shape


def default_input_shape(model: nn.Module, batch: int = 1) -> tuple[int, ...]:
    """The input the papers count: the image size the model was built for (224 when unset), and 32 frames
    for video models."""
    config = model.config
    in_chans = config.in_chans
    img_size = getattr(config, "img_size", None)
    height, width = img_size[-2:] if img_size else (224, 224)
    if num_input_axes(model) == 3:
        return (batch, in_chans, VIDEO_FRAMES, height, width)
    return (batch, in_chans, height, width)
