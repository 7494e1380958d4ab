"""N-D window geometry: partition / reverse, relative position index, shifted-window masks.

Every function works for any number of window axes (2 for images, 3 for videos). Grids are
channels-last: (B, *grid, C).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

MASK_FILL = -100.0  # the official fill value for cross-region pairs (not -inf)


def window_partition(x: torch.Tensor, window: tuple[int, ...]) -> torch.Tensor:
    """(B, *grid, C) with grid divisible by ``window`` -> (B, num_windows, tokens_per_window, C).

    Windows are ordered row-major over the window grid; tokens inside a window row-major.
    """
    batch, *grid, channels = x.shape
    ndim = len(window)
    split_shape = [batch]
    for size, win in zip(grid, window):
        split_shape += [size // win, win]
    x = x.view(*split_shape, channels)
    order = [0] + [1 + 2 * a for a in range(ndim)] + [2 + 2 * a for a in range(ndim)] + [2 * ndim + 1]
    num_windows = math.prod(g // w for g, w in zip(grid, window))
    return x.permute(order).reshape(batch, num_windows, math.prod(window), channels)


def window_reverse(windows: torch.Tensor, window: tuple[int, ...], grid: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B, num_windows, N, C) -> (B, *grid, C)."""
    batch, channels, ndim = windows.shape[0], windows.shape[-1], len(window)
    counts = [g // w for g, w in zip(grid, window)]
    x = windows.view(batch, *counts, *window, channels)
    order = [0]
    for a in range(ndim):
        order += [1 + a, 1 + ndim + a]
    order.append(2 * ndim + 1)
    return x.permute(order).reshape(batch, *grid, channels)


@lru_cache(maxsize=256)
def _relative_position_index(window: tuple[int, ...], table_window: tuple[int, ...]) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")).flatten(1)
    relative = coords[:, :, None] - coords[:, None, :]  # (ndim, N, N)
    index = torch.zeros_like(relative[0])
    for axis, table_size in enumerate(table_window):
        index = index * (2 * table_size - 1) + relative[axis] + (table_size - 1)
    return index


def relative_position_index(window: tuple[int, ...], table_window: tuple[int, ...] | None = None) -> torch.Tensor:
    """(N, N) int64 row of the bias table holding the offset between tokens i and j of a window.

    ``table_window`` is the window the table was built for ((2w-1) rows per axis, first axis
    major); it defaults to ``window``. A smaller ``window`` indexes the matching offsets of the
    larger table (geometrically exact).
    """
    window = tuple(int(w) for w in window)
    table_window = window if table_window is None else tuple(int(w) for w in table_window)
    if any(w > t for w, t in zip(window, table_window)):
        raise ValueError(f"window {window} is larger than the bias table's window {table_window}")
    return _relative_position_index(window, table_window)


@lru_cache(maxsize=128)
def _region_labels(grid: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...]) -> torch.Tensor:
    labels = torch.zeros(grid, dtype=torch.int64)
    for axis, (size, win, sh) in enumerate(zip(grid, window, shift)):
        axis_labels = torch.zeros(size, dtype=torch.int64)
        if sh > 0:  # slices [0, -win), [-win, -sh), [-sh, end) of the rolled frame
            axis_labels[size - win:size - sh] = 1
            axis_labels[size - sh:] = 2
        view = [1] * len(grid)
        view[axis] = size
        labels = labels * 3 + axis_labels.view(view)
    return labels


_MASK_CACHE: dict[tuple, torch.Tensor] = {}


def shifted_window_mask(padded_grid: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...],
                        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(num_windows, N, N) additive mask: 0 within a region, -100 across regions of the shifted frame.

    Computed on the padded grid with the clamped window/shift; cached per
    (padded grid, window, shift, device, dtype).
    """
    key = (tuple(padded_grid), tuple(window), tuple(shift), str(device), dtype)
    mask = _MASK_CACHE.get(key)
    if mask is None:
        labels = _region_labels(tuple(padded_grid), tuple(window), tuple(shift))
        win_labels = window_partition(labels[None, ..., None], tuple(window))[0, :, :, 0]  # (nW, N)
        different = win_labels[:, :, None] != win_labels[:, None, :]
        mask = torch.zeros(different.shape, dtype=dtype).masked_fill_(different, MASK_FILL).to(device)
        if len(_MASK_CACHE) > 256:
            _MASK_CACHE.clear()
        _MASK_CACHE[key] = mask
    return mask


def padded_size(grid: tuple[int, ...], window: tuple[int, ...]) -> tuple[int, ...]:
    """Smallest multiple of ``window`` per axis that holds ``grid``."""
    return tuple(-(-g // w) * w for g, w in zip(grid, window))
