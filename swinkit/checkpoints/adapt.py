"""Adapting checkpoint tensors to a model that differs from the checkpoint's.

Pure functions on tensors (each one tested on its own), then :func:`adapt_state_dict`, which
applies them to a native-key state dict for a given model and records what it changed:

* relative position bias tables: bicubic resize when the window differs (2D; spatial part of 3D
  tables, temporal part linear), and the official 2D -> 3D inflation (resize, then tile over
  temporal offsets);
* patch embedding: kernel resampling when the patch size differs, input-channel change, and
  2D -> 3D inflation ("inflate": repeat over time / T, the official rule; "center": the 2D kernel
  at the central temporal slice, zeros elsewhere);
* absolute position embedding: bicubic resize when the token grid differs;
* classifier: dropped, re-initialised, or narrowed to a subset of the checkpoint's classes.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinkit.checkpoints.infer import infer_window, table_grid

INFLATE_MODES = ("inflate", "center")


# ----------------------------------------------------------------------------- pure tensor functions
def _as_float(tensor: torch.Tensor) -> torch.Tensor:
    """Interpolation kernels need float32/float64; half precision is computed in float32."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def resize_rel_pos_table(table: torch.Tensor, src_window: Sequence[int], dst_window: Sequence[int]) -> torch.Tensor:
    """Resize a relative position bias table (L_src, nH) built for ``src_window`` to ``dst_window``.

    The table is a grid of (2w-1) offsets per axis, first axis major. 2D: bicubic over the
    (2Wh-1, 2Ww-1) grid (``F.interpolate``, align_corners=False), as Microsoft's and Video Swin's
    loaders do. 3D (Wd, Wh, Ww): bicubic over the spatial grid of every temporal offset, then
    linear over the temporal offsets if Wd differs. Returns (L_dst, nH) in the table's dtype.
    """
    src, dst = table_grid(src_window), table_grid(dst_window)
    if len(src) != len(dst) or len(src) not in (2, 3):
        raise ValueError(f"windows {tuple(src_window)} and {tuple(dst_window)} must both have 2 or both 3 axes")
    if table.ndim != 2 or table.shape[0] != math.prod(src):
        raise ValueError(f"a table for window {tuple(src_window)} has {math.prod(src)} rows, got shape "
                         f"{tuple(table.shape)}")
    if src == dst:
        return table
    heads = table.shape[1]
    grid = _as_float(table).t().reshape(1, heads, *src)
    if len(src) == 2:
        out = F.interpolate(grid, size=dst, mode="bicubic", align_corners=False)
    else:
        # temporal offsets as the batch: (Td, nH, Th, Tw) -> spatial bicubic per temporal offset
        out = grid[0].transpose(0, 1)
        if src[1:] != dst[1:]:
            out = F.interpolate(out, size=dst[1:], mode="bicubic", align_corners=False)
        out = out.transpose(0, 1)  # (nH, Td, Th', Tw')
        if src[0] != dst[0]:
            per_position = out.permute(0, 2, 3, 1).reshape(-1, 1, src[0])
            per_position = F.interpolate(per_position, size=dst[0], mode="linear", align_corners=False)
            out = per_position.reshape(heads, dst[1], dst[2], dst[0]).permute(0, 3, 1, 2)
    return out.reshape(heads, -1).t().contiguous().to(table.dtype)


def crop_rel_pos_table(table: torch.Tensor, src_window: Sequence[int], dst_window: Sequence[int]) -> torch.Tensor:
    """The central part of a (L_src, nH) table that covers the offsets of a smaller ``dst_window``.

    Exact for a model that indexes its table geometrically: a window smaller than the table's
    only ever reads these rows.
    """
    src, dst = table_grid(src_window), table_grid(dst_window)
    if len(src) != len(dst) or any(d > s for d, s in zip(dst, src)):
        raise ValueError(f"window {tuple(dst_window)} is not inside window {tuple(src_window)}")
    grid = table.reshape(*src, table.shape[1])
    centre = tuple(slice((s - d) // 2, (s - d) // 2 + d) for s, d in zip(src, dst))
    return grid[centre].reshape(-1, table.shape[1]).contiguous()


def embed_rel_pos_table(table: torch.Tensor, src_window: Sequence[int], dst_window: Sequence[int]) -> torch.Tensor:
    """A table clamped to a small stage grid, placed in a table for the larger ``dst_window``.

    The offsets the source covers keep their exact values (so the model computes what the source
    computed wherever the source could run); the offsets it never saw come from the bicubic resize.
    """
    src, dst = table_grid(src_window), table_grid(dst_window)
    out = resize_rel_pos_table(table, src_window, dst_window).reshape(*dst, table.shape[1]).clone()
    centre = tuple(slice((d - s) // 2, (d - s) // 2 + s) for s, d in zip(src, dst))
    out[centre] = table.reshape(*src, table.shape[1])
    return out.reshape(-1, table.shape[1])


def inflate_rel_pos_table(table: torch.Tensor, window_2d: Sequence[int], window_3d: Sequence[int]) -> torch.Tensor:
    """Official 2D -> 3D table inflation: (L2d, nH) -> ((2Wd-1)(2Wh-1)(2Ww-1), nH).

    Bicubic resize to the 3D spatial window (only if the row counts differ, as the official code
    does), then the table tiled (2Wd-1) times: the bias does not depend on the temporal offset.
    """
    if len(window_2d) != 2 or len(window_3d) != 3:
        raise ValueError(f"expected a 2D and a 3D window, got {tuple(window_2d)} and {tuple(window_3d)}")
    spatial = table
    if math.prod(table_grid(window_2d)) != math.prod(table_grid(window_3d[1:])):
        spatial = resize_rel_pos_table(table, window_2d, window_3d[1:])
    return spatial.repeat(2 * window_3d[0] - 1, 1)


def inflate_patch_kernel(weight: torch.Tensor, frames: int, mode: str = "inflate") -> torch.Tensor:
    """2D patch kernel (C, in, Ph, Pw) -> 3D (C, in, frames, Ph, Pw).

    "inflate" (official ``inflate_weights``): the kernel repeated over time and divided by
    ``frames``. "center": the kernel, undivided, at temporal slice frames // 2; zeros elsewhere.
    """
    if weight.ndim != 4:
        raise ValueError(f"expected a 2D patch kernel (C, in, Ph, Pw), got shape {tuple(weight.shape)}")
    if mode == "inflate":
        return weight.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
    if mode == "center":
        out = weight.new_zeros(weight.shape[:2] + (frames,) + weight.shape[2:])
        out[:, :, frames // 2] = weight
        return out
    raise ValueError(f"inflation mode must be one of {INFLATE_MODES}, got {mode!r}")


def _resize_matrix(old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """(old_h*old_w, new_h*new_w): row i is the bicubic (antialiased) resize of the i-th basis image."""
    basis = torch.eye(old[0] * old[1], dtype=torch.float64).view(-1, 1, *old)
    return F.interpolate(basis, size=new, mode="bicubic", antialias=True, align_corners=False).flatten(1)


def resample_patch_kernel(weight: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """Patch kernel (C, in, *P) -> (C, in, *patch_size).

    Spatial axes: the pseudo-inverse of bicubic resizing (FlexiViT, as timm's
    ``resample_patch_embed``), so a patch resized to the new size gives the same response as the
    original patch did. Temporal axis (3D): summed, then spread evenly over the new length, so a
    static clip gives the same response.
    """
    patch_size = tuple(int(p) for p in patch_size)
    if weight.ndim - 2 != len(patch_size):
        raise ValueError(f"kernel {tuple(weight.shape)} and patch size {patch_size} have different axis counts")
    out = _as_float(weight)
    if len(patch_size) == 3 and out.shape[2] != patch_size[0]:
        out = out.sum(2, keepdim=True).repeat(1, 1, patch_size[0], 1, 1) / patch_size[0]
    old, new = tuple(out.shape[-2:]), patch_size[-2:]
    if old != new:
        pinv = torch.linalg.pinv(_resize_matrix(old, new))  # (new_n, old_n)
        flat = out.reshape(-1, old[0] * old[1]).double()
        out = (flat @ pinv.t()).reshape(*out.shape[:-2], *new).to(out.dtype)
    return out.to(weight.dtype)


def adapt_in_chans(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """First-layer kernel (C, in, *k) -> (C, in_chans, *k), timm's rule.

    One channel: the sum over input channels (a grey image gives the colour model's response).
    Otherwise the input channels repeated cyclically and scaled by in / in_chans.
    """
    current = weight.shape[1]
    if in_chans == current:
        return weight
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // current)
    return weight.repeat(1, repeats, *([1] * (weight.ndim - 2)))[:, :in_chans] * (current / in_chans)


def resize_abs_pos_embed(pos: torch.Tensor, src_grid: Sequence[int], dst_grid: Sequence[int]) -> torch.Tensor:
    """Absolute position embedding (1, Hs*Ws, C) -> (1, Hd*Wd, C), bicubic over the token grid."""
    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    if pos.shape[1] != math.prod(src_grid):
        raise ValueError(f"embedding of shape {tuple(pos.shape)} does not hold a {src_grid} grid")
    if src_grid == dst_grid:
        return pos
    grid = _as_float(pos).reshape(1, *src_grid, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=dst_grid, mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1]).contiguous().to(pos.dtype)


def select_classes(weight: torch.Tensor, bias: torch.Tensor | None, classes: Sequence[int]
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Classifier rows for ``classes`` (checkpoint class indices, in the new order): (K', F), (K',)."""
    index = torch.as_tensor(list(classes), dtype=torch.long)
    if index.ndim != 1 or index.numel() == 0:
        raise ValueError("class_subset must be a non-empty sequence of class indices")
    if index.min() < 0 or index.max() >= weight.shape[0]:
        raise ValueError(f"class_subset indices must be in [0, {weight.shape[0]}) (the checkpoint's classes), "
                         f"got {index.min().item()}..{index.max().item()}")
    return weight[index].clone(), (bias[index].clone() if bias is not None else None)


# ----------------------------------------------------------------------------- state-dict adaptation
def adapt_state_dict(state: dict[str, torch.Tensor], model: nn.Module, report, derived: dict | None = None, *,
                     inflate: str = "inflate", class_subset: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Return ``state`` (native keys) adapted to ``model``; changes are recorded in ``report``.

    ``derived``: the checkpoint's derived buffers (native keys), used to read table windows
    exactly. ``inflate``: 2D -> 3D kernel mode when a 2D checkpoint meets a video model.
    ``class_subset``: checkpoint class indices whose classifier rows the model keeps.
    """
    if inflate not in INFLATE_MODES:
        raise ValueError(f"inflate must be one of {INFLATE_MODES}, got {inflate!r}")
    state, derived = dict(state), derived or {}
    target = model.state_dict()
    if getattr(model, "family", None) == "shunted":
        _adapt_input_conv(state, target, "patch_embed1.conv.0.weight", report)
        _adapt_head(state, target, "head.", report, class_subset, reset=False)
        return state

    patch_key = "patch_embed.proj.weight"
    inflating = (patch_key in state and patch_key in target and state[patch_key].ndim == 4
                 and target[patch_key].ndim == 5)
    if inflating:
        report.notes.append(f"2D checkpoint inflated to 3D (mode {inflate!r})")
    if patch_key in state and patch_key in target:
        _adapt_patch_kernel(state, target[patch_key], patch_key, inflate if inflating else None, report)
    tables = [k for k in state if k.endswith("relative_position_bias_table")]
    largest = max((state[k].shape[0] for k in tables), default=0)
    for key in [k for k in tables if k in target]:
        # Microsoft / timm build smaller tables for stages whose grid was smaller than the window
        clamped = state[key].shape[0] < largest
        _adapt_table(state, target[key], key, model, derived, inflating, clamped, report)
    if "absolute_pos_embed" in state and "absolute_pos_embed" in target:
        _adapt_abs_pos(state, target["absolute_pos_embed"], model, report)
    elif inflating and "absolute_pos_embed" in state:
        state.pop("absolute_pos_embed")
        report.ignored.append("absolute_pos_embed")
        report.notes.append("absolute_pos_embed dropped: Video Swin has none (as in the official inflation)")
    _adapt_head(state, target, "head.fc.", report, class_subset, reset=inflating)
    return state


def _adapt_input_conv(state: dict, target: dict, key: str, report) -> None:
    if key in state and key in target and state[key].shape[1] != target[key].shape[1]:
        if state[key].shape[:1] + state[key].shape[2:] == target[key].shape[:1] + target[key].shape[2:]:
            state[key] = adapt_in_chans(state[key], target[key].shape[1])
            report.resized.append(key)
            report.notes.append(f"{key}: input channels adapted to {target[key].shape[1]}")


def _adapt_patch_kernel(state: dict, wanted: torch.Tensor, key: str, inflate: str | None, report) -> None:
    weight = state[key]
    if weight.shape == wanted.shape or weight.shape[0] != wanted.shape[0]:
        return  # equal, or a different embedding width: reported as a mismatch
    weight = adapt_in_chans(weight, wanted.shape[1])
    if tuple(weight.shape[-2:]) != tuple(wanted.shape[-2:]):
        weight = resample_patch_kernel(weight, wanted.shape[-2:] if weight.ndim == 4 else
                                       (weight.shape[2],) + tuple(wanted.shape[-2:]))
        report.notes.append(f"{key}: patch kernel resampled to {tuple(wanted.shape[-2:])}")
    if inflate is not None:
        weight = inflate_patch_kernel(weight, wanted.shape[2], inflate)
    elif weight.shape != wanted.shape:
        weight = resample_patch_kernel(weight, wanted.shape[2:])
    state[key] = weight
    report.resized.append(key)


def _adapt_table(state: dict, wanted: torch.Tensor, key: str, model: nn.Module, derived: dict, inflating: bool,
                 clamped: bool, report) -> None:
    table = state[key]
    if table.shape[1] != wanted.shape[1] or (table.shape == wanted.shape and not inflating):
        return  # same shape, or a different number of heads (reported as a mismatch)
    dst_window = tuple(model.get_submodule(key.rsplit(".", 1)[0]).table_window)
    index = derived.get(key.replace("relative_position_bias_table", "relative_position_index"))
    if inflating:
        src_window = infer_window(table.shape[0], 2, index=index, like=dst_window[1:])
        state[key] = inflate_rel_pos_table(table, src_window, dst_window)
    else:
        src_window = infer_window(table.shape[0], len(dst_window), index=index, like=dst_window)
        if clamped and all(s < d for s, d in zip(src_window, dst_window)):
            state[key] = embed_rel_pos_table(table, src_window, dst_window)
            report.notes.append(f"{key}: clamped table of window {src_window} placed at the centre of window "
                                f"{dst_window}")
        else:
            state[key] = resize_rel_pos_table(table, src_window, dst_window)
            report.notes.append(f"{key}: table resized from window {src_window} to {dst_window}")
    report.resized.append(key)


def _adapt_abs_pos(state: dict, wanted: torch.Tensor, model: nn.Module, report) -> None:
    pos = state["absolute_pos_embed"]
    if pos.shape == wanted.shape or pos.shape[-1] != wanted.shape[-1]:
        return
    side = math.isqrt(pos.shape[1])
    if side * side != pos.shape[1]:
        return  # not a square grid: reported as a mismatch
    dst_grid = model.patch_embed.output_grid(model.config.img_size)
    state["absolute_pos_embed"] = resize_abs_pos_embed(pos, (side, side), dst_grid)
    report.resized.append("absolute_pos_embed")


def _adapt_head(state: dict, target: dict, prefix: str, report, class_subset: Sequence[int] | None,
                reset: bool) -> None:
    """Keep, narrow, drop or re-initialise the classifier ``prefix``{weight,bias}."""
    keys = [prefix + "weight", prefix + "bias"]
    in_state = [k for k in keys if k in state]
    in_model = [k for k in keys if k in target]
    if class_subset is not None and not (in_state and in_model):
        raise ValueError("class_subset needs a classifier in both the checkpoint and the model")
    if not in_model:
        if in_state:  # headless model (num_classes=0): the checkpoint's classifier is not used
            for k in in_state:
                state.pop(k)
            report.ignored.extend(in_state)
            report.notes.append("classifier dropped: the model has no head (num_classes=0)")
        return
    if not in_state:
        report.reinitialized.extend(in_model)
        report.notes.append("classifier re-initialised: the checkpoint has none")
        return
    weight, bias = state[keys[0]], state.get(keys[1])
    wanted = target[keys[0]]
    if weight.shape[1] != wanted.shape[1]:
        return  # a different feature width: reported as a mismatch
    if class_subset is not None:
        if len(class_subset) != wanted.shape[0]:
            raise ValueError(f"class_subset has {len(class_subset)} classes but the model has {wanted.shape[0]}")
        state[keys[0]], new_bias = select_classes(weight, bias, class_subset)
        if new_bias is not None:
            state[keys[1]] = new_bias
        report.resized.extend(in_state)
        report.notes.append(f"classifier narrowed to {len(class_subset)} of the checkpoint's {weight.shape[0]} classes")
    elif reset or weight.shape[0] != wanted.shape[0]:
        for k in in_state:
            state.pop(k)
        report.reinitialized.extend(in_model)
        why = "2D classifiers are not inflated" if reset else \
            f"the checkpoint has {weight.shape[0]} classes, the model {wanted.shape[0]}"
        report.notes.append(f"classifier re-initialised: {why}")
