"""Where the tokens of a Swin stage come from: window membership and token -> pixel mapping.

Pure functions of the grid, the window plan and the compat rules; they replay the block's own padding,
rolling and partitioning on token indices, so the pictures show exactly what the model computes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinkit.layers.windows import padded_size, shifted_window_mask, window_order


@dataclass(frozen=True)
class StageGeometry:
    """Token grid of a Swin stage and its window plan on that grid; ``token_size`` is how many input pixels
    (frames, for the time axis) one token covers along each axis."""

    grid: tuple[int, ...]
    window: tuple[int, ...]
    shift: tuple[int, ...]
    token_size: tuple[int, ...]


def stage_geometry(model: nn.Module, input_size: tuple[int, ...], stage: int) -> StageGeometry:
    """Geometry of ``model.layers[stage]`` for an input of ``input_size`` ((H, W) or (T, H, W))."""
    if not hasattr(model, "layers"):
        raise ValueError(f"window geometry applies to Swin / Video Swin models, not to {type(model).__name__}")
    num_stages = len(model.layers)
    if not 0 <= stage < num_stages:
        raise ValueError(f"stage must be in [1, {num_stages}] (1-based), got {stage + 1}")
    grid = model.patch_embed.output_grid(tuple(input_size))
    token_size = tuple(model.config.patch_size)
    for _ in range(stage):  # patch merging halves the two spatial axes, never time
        grid = grid[:-2] + tuple(-(-g // 2) for g in grid[-2:])
        token_size = token_size[:-2] + tuple(2 * t for t in token_size[-2:])
    window, shift = model.layers[stage].window_plan(grid)
    return StageGeometry(tuple(grid), tuple(window), tuple(shift), token_size)


def window_token_positions(grid: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...],
                           roll_before_pad: bool = False) -> torch.Tensor:
    """(num_windows, tokens_per_window) flat grid index of every windowed token, -1 for padding.

    The block's own layout: the grid padded to a multiple of ``window`` and rolled by ``-shift`` (in the
    order the compat rules give), then partitioned into windows (:func:`window_order`).
    """
    order = window_order(tuple(grid), tuple(window), tuple(shift), roll_before_pad)
    positions = order.view(-1, math.prod(window))
    return torch.where(positions == math.prod(grid), -1, positions)


def attention_groups(grid: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...],
                     roll_before_pad: bool = False) -> torch.Tensor:
    """(*grid) int64 label per token: two tokens share a label iff they attend to each other.

    Unshifted: one label per window. Shifted: windows of the rolled frame split into the regions the
    shifted-window mask keeps apart.
    """
    positions = window_token_positions(grid, window, shift, roll_before_pad)
    num_windows, tokens = positions.shape
    if any(shift):
        mask = shifted_window_mask(padded_size(grid, window), tuple(window), tuple(shift))
        first_partner = (mask == 0).to(torch.int64).argmax(dim=-1)  # (nW, N): first token in the same region
    else:
        first_partner = torch.zeros(num_windows, tokens, dtype=torch.int64)
    labels = torch.arange(num_windows)[:, None] * tokens + first_partner
    groups = torch.full((math.prod(grid),), -1, dtype=torch.int64)
    valid = positions >= 0
    groups[positions[valid]] = labels[valid]
    return groups.view(grid)


def to_pixels(token_map: torch.Tensor, out_size: tuple[int, ...],
              token_size: tuple[int, ...] | None = None, fill: float = 0) -> torch.Tensor:
    """(*grid) token values -> (*out_size) pixel (and frame) values.

    With ``token_size`` every token covers exactly that many pixels per axis (cropped at the end, ``fill``
    where the grid does not reach); without it, nearest-neighbour resampling.
    """
    if token_size is None:
        resized = F.interpolate(token_map[None, None].double(), size=tuple(out_size), mode="nearest")[0, 0]
        return resized.to(token_map.dtype)
    out = token_map
    for axis, (size, count) in enumerate(zip(token_size, out_size)):
        out = out.repeat_interleave(size, dim=axis)
        if out.shape[axis] >= count:
            out = out.narrow(axis, 0, count)
        else:
            pad_shape = list(out.shape)
            pad_shape[axis] = count - out.shape[axis]
            out = torch.cat([out, out.new_full(pad_shape, fill)], dim=axis)
    return out
