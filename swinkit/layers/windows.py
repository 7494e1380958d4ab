"""N-D window geometry: partition / reverse, relative position index, shifted-window masks.

Every function works for any number of window axes (2 for images, 3 for videos). Grids are
channels-last: (B, *grid, C).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

MASK_FILL = -100.0  # the official fill value for cross-region pairs (not -inf)


def _cached(maxsize: int):
    """``lru_cache`` whose tensors are built outside inference mode, so that autograd may use them
    later in the process; ``.__wrapped__`` stays the plain function (traced graphs call it)."""
    def decorate(fn):
        def build(*args):
            with torch.inference_mode(False):
                return fn(*args)

        cached = lru_cache(maxsize=maxsize)(build)
        cached.__wrapped__, cached.__doc__, cached.__name__ = fn, fn.__doc__, fn.__name__
        return cached
    return decorate


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
    num_windows = math.prod([g // w for g, w in zip(grid, window)])
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


@_cached(256)
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
    for w, t in zip(window, table_window):
        if w > t:
            raise ValueError(f"window {window} is larger than the bias table's window {table_window}")
    if torch.compiler.is_compiling():  # traced once into the graph instead of read from the cache
        return _relative_position_index.__wrapped__(window, table_window)
    return _relative_position_index(window, table_window)


def sliced_relative_position_index(table_window: tuple[int, ...], tokens: int) -> torch.Tensor:
    """The official Video Swin index for windows of ``tokens`` tokens: the table window's own
    (N, N) index cut to ``[:tokens, :tokens]`` (not geometric when the window was clamped)."""
    if torch.compiler.is_compiling():
        return relative_position_index(table_window)[:tokens, :tokens]
    return _sliced_index(tuple(int(w) for w in table_window), tokens)


@_cached(64)
def _sliced_index(table_window: tuple[int, ...], tokens: int) -> torch.Tensor:
    return _relative_position_index(table_window, table_window)[:tokens, :tokens].contiguous()


@_cached(128)
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
    if torch.compiler.is_compiling():
        return _build_mask(tuple(padded_grid), tuple(window), tuple(shift), device, dtype, cached_labels=False)
    key = (tuple(padded_grid), tuple(window), tuple(shift), str(device), dtype)
    mask = _MASK_CACHE.get(key)
    if mask is None:
        with torch.inference_mode(False):  # usable by autograd later on
            mask = _build_mask(tuple(padded_grid), tuple(window), tuple(shift), device, dtype)
        if len(_MASK_CACHE) > 256:
            _MASK_CACHE.clear()
        _MASK_CACHE[key] = mask
    return mask


def _build_mask(padded_grid: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...],
                device: torch.device | str, dtype: torch.dtype, cached_labels: bool = True) -> torch.Tensor:
    labels = (_region_labels if cached_labels else _region_labels.__wrapped__)(padded_grid, window, shift)
    win_labels = window_partition(labels[None, ..., None], window)[0, :, :, 0]  # (nW, N)
    different = win_labels[:, :, None] != win_labels[:, None, :]
    return torch.zeros(different.shape, dtype=dtype).masked_fill_(different, MASK_FILL).to(device)


def padded_size(grid: tuple[int, ...], window: tuple[int, ...]) -> tuple[int, ...]:
    """Smallest multiple of ``window`` per axis that holds ``grid``."""
    return tuple(-(-g // w) * w for g, w in zip(grid, window))


@_cached(256)
def window_order(grid: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...],
                 roll_before_pad: bool = False) -> torch.Tensor:
    """(num_windows * N,) int64: the token (row-major id in ``grid``) at each window slot.

    Slots are ordered as :func:`window_partition` orders them after the block's pad and roll
    (``roll_before_pad`` picks the order of the two). Slots that hold padding get the id
    ``prod(grid)``, one past the last token.
    """
    grid, window, shift = tuple(grid), tuple(window), tuple(shift)
    padded = padded_size(grid, window)
    num_tokens = math.prod(grid)
    ids = torch.arange(num_tokens).view(grid)
    axes = tuple(range(len(grid)))
    pad = []
    for g, p in zip(reversed(grid), reversed(padded)):
        pad += [0, p - g]
    if roll_before_pad and any(shift):
        ids = torch.roll(ids, [-s for s in shift], axes)
    if padded != grid:
        ids = torch.nn.functional.pad(ids, pad, value=num_tokens)
    if not roll_before_pad and any(shift):
        ids = torch.roll(ids, [-s for s in shift], axes)
    return window_partition(ids[None, ..., None], window).reshape(-1)


@_cached(256)
def layout_change(grid: tuple[int, ...], source: tuple | None, target: tuple | None,
                  device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Index (on ``device``) moving tokens from one unpadded layout to another: ``new = old[index]``.

    A layout is ``None`` (row-major grid order) or a ``(window, shift, roll_before_pad)`` triple
    naming a :func:`window_order`; padded layouts are not supported. Returns None when the two
    layouts order the tokens identically.
    """
    num_tokens = math.prod(grid)
    identity = torch.arange(num_tokens)
    source_order = identity if source is None else window_order(grid, *source)
    target_order = identity if target is None else window_order(grid, *target)
    if source_order.numel() != num_tokens or target_order.numel() != num_tokens:
        raise ValueError(f"layout_change needs unpadded layouts on grid {grid}, got {source} -> {target}")
    position = torch.empty_like(source_order)
    position[source_order] = identity  # token id -> slot in the source layout
    index = position[target_order]
    return None if torch.equal(index, identity) else index.to(device)


def gather_tokens(x: torch.Tensor, index: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Reorder the tokens of x (B, L, C) by ``index`` (L,): out[:, i] = x[:, index[i]] (one copy).

    ``out`` (B, L, C), contiguous and not overlapping x, receives the result if given.
    """
    if index is None:
        return x
    batch, tokens, channels = x.shape
    if index.device != x.device:
        index = index.to(x.device)
    rows = index if batch == 1 else ((torch.arange(batch, device=x.device) * tokens)[:, None] + index).reshape(-1)
    flat = x.reshape(batch * tokens, channels)
    if out is None and x.requires_grad and torch.is_grad_enabled() and not torch.compiler.is_compiling():
        return PermuteRows.apply(flat, rows).view(batch, tokens, channels)
    if out is None:
        return flat.index_select(0, rows).view(batch, tokens, channels)
    torch.index_select(flat, 0, rows, out=out.view(batch * tokens, channels))
    return out


class PermuteRows(torch.autograd.Function):
    """``x[rows]`` for x (n, C) and a permutation ``rows`` (n,). Backward gathers the gradient with
    the inverse permutation, instead of index_select's zero-filled gradient and scatter-add."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        return x.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        inverse = torch.empty_like(rows)
        inverse[rows] = torch.arange(rows.numel(), device=rows.device)
        return grad.index_select(0, inverse), None
