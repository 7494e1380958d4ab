"""N-D window geometry against direct (loop) definitions of the official code."""
import itertools

import pytest
import torch

from swinkit.layers.compat import clamp_window
from swinkit.layers.windows import (MASK_FILL, padded_size, relative_position_index, shifted_window_mask,
                                    window_partition, window_reverse)


@pytest.mark.parametrize("grid,window", [((8, 12), (4, 3)), ((4, 6, 9), (2, 3, 3)), ((7, 14), (7, 7))])
def test_partition_reverse_roundtrip_and_order(grid, window):
    x = torch.randn(2, *grid, 5)
    windows = window_partition(x, window)
    num_windows = torch.Size([g // w for g, w in zip(grid, window)]).numel()
    assert windows.shape == (2, num_windows, torch.Size(window).numel(), 5)
    assert torch.equal(window_reverse(windows, window, grid), x)
    # window 1 holds the tokens of the second window along the last axis, row-major inside
    idx = [slice(0, w) for w in window[:-1]] + [slice(window[-1], 2 * window[-1])]
    assert torch.equal(windows[0, 1], x[(0, *idx)].reshape(-1, 5))


def _loop_index(window, table):
    coords = list(itertools.product(*[range(w) for w in window]))
    out = torch.empty(len(coords), len(coords), dtype=torch.long)
    for i, a in enumerate(coords):
        for j, b in enumerate(coords):
            idx = 0
            for axis in range(len(window)):
                idx = idx * (2 * table[axis] - 1) + (a[axis] - b[axis] + table[axis] - 1)
            out[i, j] = idx
    return out


@pytest.mark.parametrize("window,table", [((7, 7), (7, 7)), ((2, 7, 7), (2, 7, 7)), ((3, 4), (5, 4)),
                                          ((2, 3, 3), (4, 3, 3))])
def test_relative_position_index(window, table):
    assert torch.equal(relative_position_index(window, table), _loop_index(window, table))


def test_relative_position_index_2d_known_values():
    index = relative_position_index((2, 2))
    # offsets (dh, dw) -> (dh+1)*3 + (dw+1); token 0=(0,0), 3=(1,1)
    assert index[0, 0] == 4 and index[0, 3] == 0 and index[3, 0] == 8 and index.max() == 8


def _official_mask(padded, window, shift):
    """The official loop: label slices [0,-w), [-w,-s), [-s,end) per axis, one count per combination."""
    labels = torch.zeros(padded)
    count = 0
    for slices in itertools.product(*[(slice(0, -w), slice(-w, -s), slice(-s, None))
                                      for w, s in zip(window, shift)]):
        labels[slices] = count
        count += 1
    win = window_partition(labels[None, ..., None], window)[0, :, :, 0]
    diff = win[:, :, None] - win[:, None, :]
    return diff.masked_fill(diff != 0, MASK_FILL).masked_fill(diff == 0, 0.0)


@pytest.mark.parametrize("padded,window,shift", [
    ((8, 8), (4, 4), (2, 2)), ((6, 9), (3, 3), (1, 1)), ((8, 14, 14), (8, 7, 7), (4, 3, 3)),
    ((4, 6, 6), (4, 3, 3), (0, 1, 1))])
def test_shift_mask_matches_official_loop(padded, window, shift):
    mask = shifted_window_mask(padded, window, shift)
    assert torch.equal(mask, _official_mask(padded, window, shift))
    assert set(mask.unique().tolist()) <= {0.0, MASK_FILL}
    assert shifted_window_mask(padded, window, shift) is mask  # cached


def test_clamp_rules():
    assert clamp_window((5, 15, 19), (8, 7, 7), (4, 3, 3), "per_axis") == ((5, 7, 7), (0, 3, 3))
    assert clamp_window((3, 6), (4, 4), (2, 2), "per_axis") == ((3, 4), (0, 2))
    assert clamp_window((4, 8), (4, 4), (2, 2), "min_side") == ((4, 4), (0, 0))
    assert clamp_window((3, 3), (4, 4), (2, 2), "never") == ((4, 4), (0, 0))
    assert clamp_window((5, 3), (4, 4), (2, 2), "never") == ((4, 4), (2, 0))
    assert padded_size((5, 15, 19), (5, 7, 7)) == (5, 21, 21)
