"""Reading a model's architecture from its checkpoint tensors.

Swin / Video Swin (native keys): embed dim, input channels and patch from the patch kernel;
depths from the block keys; heads from the bias tables' columns; window from the tables' rows
(and the stored relative position index, when there is one); MLP ratio, qkv bias, patch norm,
per-stage norms, absolute position embedding and classes from the tensors that exist. Microsoft
and timm build tables for the window clamped to each stage's grid at ``img_size``: the configured
window is the largest table's, and ``img_size`` is read from the absolute position embedding, the
Microsoft attention masks or the clamped tables, so that the clamp rebuilds the same tables.

Shunted (official keys): dims, depths, reduction ratios, MLP ratios, stem convs, classes. The
number of heads is not stored anywhere in a Shunted checkpoint; it is assumed to give the
official head width of 32 unless ``num_heads`` is passed.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

import torch

from swinkit.checkpoints.formats import FORMAT_COMPAT

_BLOCK_KEY = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")
_SHUNTED_BLOCK_KEY = re.compile(r"^block(\d+)\.(\d+)\.")
SHUNTED_HEAD_WIDTH = 32  # every released Shunted model: num_heads = dim / 32


@dataclass
class Architecture:
    """What a checkpoint says about its model: family, builder arguments, and what was assumed."""

    family: str  # "swin" | "video_swin" | "shunted"
    kwargs: dict  # official argument names (SwinConfig.build / ShuntedConfig)
    assumed: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- windows
def table_grid(window: Sequence[int]) -> tuple[int, ...]:
    """Offsets per axis of a relative position bias table for ``window``: (2w-1, ...)."""
    return tuple(2 * int(w) - 1 for w in window)


def window_candidates(rows: int, ndim: int) -> list[tuple[int, ...]]:
    """Every window (w_1..w_ndim) whose table has ``rows`` rows, i.e. prod(2w-1) == rows."""
    if ndim == 0:
        return [()] if rows == 1 else []
    out = []
    for size in range(1, rows + 1, 2):  # 2w-1 is odd
        if rows % size == 0:
            out += [((size + 1) // 2,) + rest for rest in window_candidates(rows // size, ndim - 1)]
    return out


def infer_window(rows: int, ndim: int, index: torch.Tensor | None = None, like: Sequence[int] | None = None,
                 within: Sequence[int] | None = None) -> tuple[int, ...]:
    """The window of a bias table with ``rows`` rows (no larger than ``within`` per axis, if given).

    With the checkpoint's relative position ``index`` ((N, N) or flattened (N*N,)) the answer is
    exact. Otherwise, among the windows with that many rows, the one closest to ``like`` (fewest
    differing axes), then with equal spatial sides, then the most balanced one.
    """
    candidates = window_candidates(rows, ndim)
    if within is not None:
        candidates = [c for c in candidates if all(a <= b for a, b in zip(c, within))]
    if index is not None:
        from swinkit.layers.windows import relative_position_index

        tokens = math.isqrt(index.numel())
        square = index.reshape(tokens, tokens) if tokens * tokens == index.numel() else None
        candidates = [c for c in candidates if square is not None and math.prod(c) == tokens
                      and torch.equal(relative_position_index(c), square.to(torch.int64))]
    if not candidates:
        raise ValueError(f"no {ndim}-axis window" + (f" up to {tuple(within)}" if within is not None else "")
                         + f" has a relative position table of {rows} rows"
                         + (" matching the stored relative_position_index" if index is not None else ""))
    like = tuple(like) if like is not None else None

    def preference(window: tuple[int, ...]):
        differing = sum(a != b for a, b in zip(window, like)) if like is not None else 0
        return differing, window[-1] != window[-2], max(window) - min(window)

    return min(candidates, key=preference)


# ----------------------------------------------------------------------------- Swin / Video Swin
def _stage_blocks(state: dict) -> dict[int, int]:
    blocks: dict[int, int] = {}
    for key in state:
        if m := _BLOCK_KEY.match(key):
            stage, block = int(m[1]), int(m[2])
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    return blocks


def infer_swin(state: dict, derived: dict, fmt: str) -> Architecture:
    """Architecture of a native-key Swin / Video Swin state dict (``derived``: its derived buffers)."""
    proj = state.get("patch_embed.proj.weight")
    if proj is None or proj.ndim not in (4, 5):
        raise ValueError("no patch embedding kernel 'patch_embed.proj.weight' of 4 or 5 dimensions")
    ndim, embed_dim = proj.ndim - 2, proj.shape[0]
    blocks = _stage_blocks(state)
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise ValueError(f"stages must be numbered 0..N-1 under 'layers.N.blocks', found {sorted(blocks)}")
    depths = [blocks[i] for i in range(len(blocks))]
    tables = [state[f"layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in range(len(depths))]
    fc1 = state["layers.0.blocks.0.mlp.fc1.weight"]
    kwargs: dict = dict(
        patch_size=tuple(proj.shape[2:]), in_chans=proj.shape[1], embed_dim=embed_dim, depths=tuple(depths),
        num_heads=tuple(t.shape[1] for t in tables), mlp_ratio=fc1.shape[0] / embed_dim,
        qkv_bias="layers.0.blocks.0.attn.qkv.bias" in state, patch_norm="patch_embed.norm.weight" in state,
        num_classes=state["head.fc.weight"].shape[0] if "head.fc.weight" in state else 0,
        norm_stages=tuple(sorted({int(k.split(".")[1]) for k in state if k.startswith("stage_norms.")})),
        ape="absolute_pos_embed" in state)
    if ndim == 2:
        kwargs["compat"] = FORMAT_COMPAT.get(fmt)
    else:  # every Video Swin layout computes the official Video Swin numerics
        kwargs["compat"] = "torchvision" if fmt == "torchvision" else "video_swin"

    def index_of(stage: int):
        return derived.get(f"layers.{stage}.blocks.0.attn.relative_position_index")

    largest = max(range(len(tables)), key=lambda i: tables[i].shape[0])
    window = infer_window(tables[largest].shape[0], ndim, index_of(largest))
    kwargs["window_size"] = window
    assumed = []
    if index_of(largest) is None and len(window_candidates(tables[largest].shape[0], ndim)) > 1:
        assumed.append(f"window {window} read from the bias table size (no relative_position_index stored)")
    stage_windows = [infer_window(t.shape[0], ndim, index_of(i), like=window, within=window)
                     for i, t in enumerate(tables)]
    if ndim == 2:
        img_size = _infer_img_size(kwargs, stage_windows, state, derived)
        if img_size is not None:
            kwargs["img_size"] = img_size
    return Architecture("video_swin" if ndim == 3 else "swin", kwargs, assumed)


def _infer_img_size(kwargs: dict, stage_windows: list[tuple[int, ...]], state: dict, derived: dict
                    ) -> tuple[int, ...] | None:
    """An image size whose stage grids rebuild the checkpoint's tables (and Microsoft masks), or None."""
    patch, window = kwargs["patch_size"], kwargs["window_size"]
    if "absolute_pos_embed" in state:  # (1, H*W, C) at the training resolution; square as in Microsoft's code
        side = math.isqrt(state["absolute_pos_embed"].shape[1])
        return (side * patch[0], side * patch[1])
    masks = [(int(k.split(".")[1]), v) for k, v in derived.items() if k.endswith("attn_mask")]
    if masks:  # (nW, N, N) at stage i: a square grid of nW windows, each of the configured window
        stage, mask = min(masks, key=lambda item: item[0])
        per_side = math.isqrt(mask.shape[0])
        return tuple(per_side * w * 2 ** stage * p for w, p in zip(window, patch))
    if kwargs["compat"] not in ("microsoft", "timm"):
        return None
    grid0 = []
    for axis, w in enumerate(window):
        clamped = [i for i, sw in enumerate(stage_windows) if sw[axis] < w]
        if clamped:  # the first stage whose grid was smaller than the window: its grid is its table window
            grid0.append(stage_windows[clamped[0]][axis] * 2 ** clamped[0])
        else:  # no clamp on this axis: a grid that reaches the last stage at exactly the window
            grid0.append(w * 2 ** (len(stage_windows) - 1))
    if all(g == w * 2 ** (len(stage_windows) - 1) for g, w in zip(grid0, window)):
        return None  # nothing clamped: the tables do not depend on the image size
    return tuple(g * p for g, p in zip(grid0, patch))


# ----------------------------------------------------------------------------- Shunted
def infer_shunted(state: dict, overrides: dict) -> Architecture:
    """Architecture of an official-key Shunted state dict; ``num_heads`` from ``overrides`` or assumed."""
    stages = []
    while f"norm{len(stages) + 1}.weight" in state:
        stages.append(len(stages) + 1)
    if not stages or "patch_embed1.conv.0.weight" not in state:
        raise ValueError("not a Shunted checkpoint: expected 'patch_embed1.conv.0.weight' and 'norm1.weight'")
    depths = [0] * len(stages)
    for key in state:
        if (m := _SHUNTED_BLOCK_KEY.match(key)) and int(m[1]) <= len(stages):
            depths[int(m[1]) - 1] = max(depths[int(m[1]) - 1], int(m[2]) + 1)
    dims = [state[f"norm{s}.weight"].shape[0] for s in stages]
    sr_ratios, mlp_ratios = [], []
    for s, dim in zip(stages, dims):
        if depths[s - 1] == 0:
            raise ValueError(f"Shunted stage {s} has no blocks: its reduction ratio cannot be read")
        sr = state.get(f"block{s}.0.attn.sr1.weight")
        sr_ratios.append(sr.shape[-1] if sr is not None else 1)
        ratio = state[f"block{s}.0.mlp.fc1.weight"].shape[0] / dim
        mlp_ratios.append(int(ratio) if ratio.is_integer() else ratio)
    stem = state["patch_embed1.conv.0.weight"]
    num_conv = sum(1 for k, v in state.items()
                   if k.startswith("patch_embed1.conv.") and k.endswith(".weight") and v.ndim == 4
                   and tuple(v.shape[-2:]) == (3, 3))
    kwargs = dict(embed_dims=tuple(dims), depths=tuple(depths), sr_ratios=tuple(sr_ratios),
                  mlp_ratios=tuple(mlp_ratios), num_conv=num_conv, in_chans=stem.shape[1],
                  num_classes=state["head.weight"].shape[0] if "head.weight" in state else 0,
                  qkv_bias="block1.0.attn.q.bias" in state)
    assumed = []
    if "num_heads" not in overrides:
        heads = tuple(dim // SHUNTED_HEAD_WIDTH for dim in dims)
        valid = all(dim % SHUNTED_HEAD_WIDTH == 0 and h >= 1 and (sr == 1 or h % 2 == 0)
                    for dim, h, sr in zip(dims, heads, sr_ratios))
        if not valid:
            raise ValueError(f"Shunted checkpoints do not store the number of heads, and the official head width "
                             f"{SHUNTED_HEAD_WIDTH} does not fit embed_dims {tuple(dims)}: pass num_heads=...")
        kwargs["num_heads"] = heads
        assumed.append(f"num_heads {heads} assumed (head width {SHUNTED_HEAD_WIDTH}, as in every released model; "
                       "not stored in the checkpoint)")
    return Architecture("shunted", kwargs, assumed)
