"""What a model looks at: window partitions, attention maps and Grad-CAM, as PNG figures.

All maps are returned in input coordinates ((H, W) for images, (T, H, W) for videos) before they are
drawn, so they can be checked or reused. Figures have a fixed size: panels of ``PANEL_PX`` pixels, at most
``MAX_COLUMNS`` per row, plus a title band (:func:`figure_size`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure

from swinkit.checkpoints.io import atomic_write
from swinkit.deploy.geometry import attention_groups, stage_geometry, to_pixels, window_token_positions
from swinkit.deploy.media import Media

PANEL_PX = 320
TITLE_PX = 60
DPI = 100
MAX_COLUMNS = 4
KINDS = ("windows", "attention", "cam")


# ----------------------------------------------------------------------------- maps

@dataclass(frozen=True)
class AttentionMap:
    """Attention weights of one query token over the input: ``weights`` (H, W) or (T, H, W) holds the
    weight of the key token covering each pixel (0 outside the query's window); ``padding_weight`` is the
    weight that went to padding tokens."""

    weights: torch.Tensor
    query: tuple[int, ...]
    head: int | None
    stage: int
    block: int
    padding_weight: float
    shifted: bool | None  # Swin: SW-MSA (True) or W-MSA (False); None for models without windows


def _attention_module(model: nn.Module, stage: int, block: int) -> tuple[nn.Module, nn.Module, int]:
    """(block, its attention module, block index >= 0), checking the 0-based indices."""
    num_stages = len(model.feature_info)
    if not 0 <= stage < num_stages:
        raise ValueError(f"stage must be in [1, {num_stages}] (1-based), got {stage + 1}")
    blocks = model.layers[stage].blocks if hasattr(model, "layers") else getattr(model, f"block{stage + 1}")
    count = len(blocks)
    if not -count <= block < count:
        raise ValueError(f"stage {stage + 1} has {count} blocks; block must be in [0, {count - 1}], got {block}")
    block %= count
    owner = blocks[block]
    return owner, owner.attn, block


def _check_head(head: int | None, num_heads: int) -> None:
    if head is not None and not 0 <= head < num_heads:
        raise ValueError(f"this block has {num_heads} heads; head must be in [0, {num_heads - 1}] or None, got {head}")


def _query_token(query: tuple[int, ...], input_size: tuple[int, ...], grid: tuple[int, ...],
                 token_size: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Pixel (frame) coordinates -> token coordinates on ``grid``: by ``token_size`` when every token
    covers a fixed number of pixels, else proportionally."""
    if len(query) != len(input_size) or any(not 0 <= q < s for q, s in zip(query, input_size)):
        names = "(t, y, x)" if len(input_size) == 3 else "(y, x)"
        raise ValueError(f"query must be {names} inside the input of size {input_size}, got {query}")
    if token_size is None:
        return tuple(min(q * g // s, g - 1) for q, g, s in zip(query, grid, input_size))
    return tuple(min(q // t, g - 1) for q, g, t in zip(query, grid, token_size))


def _swin_attention(model: nn.Module, x: torch.Tensor, stage: int, block: int, head: int | None,
                    query: tuple[int, ...]) -> AttentionMap:
    owner, attn, block = _attention_module(model, stage, block)
    _check_head(head, attn.num_heads)
    captured = {}

    def block_hook(module, args):
        captured["grid"] = tuple(args[0].shape[1:-1])
        captured["window"], captured["shift"] = tuple(args[1]), tuple(args[2])

    def attn_hook(module, args, output):
        windows, bias = args  # (B, nW, N, C), (nH, N, N) or (nW, nH, N, N)
        batch, num_windows, tokens, channels = windows.shape
        qkv = module.qkv(windows).view(batch, num_windows, tokens, 3, module.num_heads, module.head_dim)
        q, k, _ = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # (B, nW, nH, N, hd)
        logits = (q @ k.transpose(-2, -1)) * module.scale + bias.to(q.dtype)
        captured["probs"] = logits.softmax(dim=-1)[0]  # (nW, nH, N, N)

    handles = [owner.register_forward_pre_hook(block_hook), attn.register_forward_hook(attn_hook)]
    try:
        with torch.no_grad():
            model.forward_features(x, out_indices=[stage])
    finally:
        for handle in handles:
            handle.remove()
    grid, window, shift = captured["grid"], captured["window"], captured["shift"]
    input_size = tuple(x.shape[2:])
    positions = window_token_positions(grid, window, shift, owner.rules.roll_before_pad)
    token_size = stage_geometry(model, input_size, stage).token_size
    token = _query_token(query, input_size, grid, token_size)
    flat = int(np.ravel_multi_index(token, grid))
    window_index, slot = (positions == flat).nonzero()[0].tolist()
    probs = captured["probs"][window_index, :, slot]  # (nH, N)
    row = probs.mean(0) if head is None else probs[head]
    valid = positions[window_index] >= 0
    token_map = torch.zeros(math.prod(grid), dtype=row.dtype)
    token_map[positions[window_index][valid]] = row[valid]
    weights = to_pixels(token_map.view(grid), input_size, token_size)
    return AttentionMap(weights, tuple(query), head, stage, block, float(row[~valid].sum()), any(shift))


def _shunted_attention(model: nn.Module, x: torch.Tensor, stage: int, block: int, head: int | None,
                       query: tuple[int, ...]) -> AttentionMap:
    """Shunted: heads [0, nH/2) attend to keys aggregated by the sr x sr convolution, the rest to the
    (sr/2) x (sr/2) one; each key covers that many stage tokens."""
    from swinkit.models.shunted import patch_linear

    _, attn, block = _attention_module(model, stage, block)
    _check_head(head, attn.num_heads)
    captured = {}

    def hook(module, args):
        captured["tokens"], captured["grid"] = args[0], tuple(args[1])

    handle = attn.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model.forward_features(x, out_indices=[stage])
    finally:
        handle.remove()
    tokens, grid = captured["tokens"][:1], captured["grid"]
    input_size = tuple(x.shape[2:])
    token = _query_token(query, input_size, grid)
    flat = token[0] * grid[1] + token[1]
    num_heads, head_dim = attn.num_heads, tokens.shape[-1] // attn.num_heads
    with torch.no_grad():
        q = attn.q(tokens[:, flat]).view(num_heads, head_dim)  # (nH, hd)
        if attn.sr_ratio > 1:
            branches = [(attn.sr1, attn.norm1, attn.kv1), (attn.sr2, attn.norm2, attn.kv2)]
        else:
            branches = [(None, None, attn.kv)]
        maps = []
        heads_per_branch = num_heads // len(branches)
        for index, (reduce, norm, kv) in enumerate(branches):
            if reduce is None:
                keys, key_grid, kernel = tokens, grid, 1
            else:
                kernel = reduce.kernel_size[0]
                reduced, key_grid = patch_linear(tokens, grid, reduce)
                keys = F.gelu(norm(reduced))
            k = kv(keys).chunk(2, dim=-1)[0].view(-1, heads_per_branch, head_dim).transpose(0, 1)  # (h, M, hd)
            q_branch = q[index * heads_per_branch:(index + 1) * heads_per_branch]
            probs = ((q_branch[:, None, :] @ k.transpose(1, 2))[:, 0] * attn.scale).softmax(-1)  # (h, M)
            for row in probs:
                # a key's weight spread evenly over the stage tokens it aggregates (0 where none reaches)
                stage_map = to_pixels(row.view(key_grid), grid, (kernel, kernel)) / float(kernel * kernel)
                maps.append(to_pixels(stage_map, input_size))
    stacked = torch.stack(maps)  # (nH, H, W)
    weights = stacked.mean(0) if head is None else stacked[head]
    return AttentionMap(weights, tuple(query), head, stage, block, 0.0, None)


def attention_map(model: nn.Module, x: torch.Tensor, stage: int, block: int = -1, head: int | None = None,
                  query: Sequence[int] | None = None) -> AttentionMap:
    """Attention weights of the token at pixel ``query`` ((y, x), or (t, y, x) for video; default the centre)
    in ``model``'s block ``block`` of ``stage`` (0-based), for ``head`` or the mean over heads (None).

    ``x`` (1, C, H, W) or (1, C, T, H, W). Recomputed from the attention module's inputs: q kᵀ · scale +
    relative position bias (+ shifted-window mask), softmax.
    """
    model.eval()
    input_size = tuple(x.shape[2:])
    query = tuple(query) if query is not None else tuple(s // 2 for s in input_size)
    if hasattr(model, "layers"):
        return _swin_attention(model, x, stage, block, head, query)
    return _shunted_attention(model, x, stage, block, head, query)


@dataclass(frozen=True)
class ClassActivation:
    """Grad-CAM of ``target_class``: ``cam`` (H, W) or (T, H, W) in [0, 1]; ``probability`` its softmax score."""

    cam: torch.Tensor
    target_class: int
    probability: float
    predicted_class: int


def grad_cam(model: nn.Module, x: torch.Tensor, target_class: int | None = None) -> ClassActivation:
    """Grad-CAM on the last stage map: ReLU(sum_c mean(d score / d A_c) A_c), upsampled (bi/trilinear) to
    the input and scaled to [0, 1]. ``target_class`` None takes the predicted class. ``x`` has batch 1."""
    model.eval()
    with torch.enable_grad():
        features = model.forward_features(x)[-1].detach().requires_grad_(True)  # (1, C, *grid)
        logits = model.forward_head(features)
        predicted = int(logits[0].argmax())
        target = predicted if target_class is None else int(target_class)
        if not 0 <= target < logits.shape[1]:
            raise ValueError(f"class must be in [0, {logits.shape[1] - 1}], got {target_class}")
        (gradient,) = torch.autograd.grad(logits[0, target], features)
    spatial = tuple(range(2, features.ndim))
    weights = gradient.mean(dim=spatial, keepdim=True)
    cam = F.relu((weights * features.detach()).sum(dim=1, keepdim=True))
    mode = "trilinear" if cam.ndim == 5 else "bilinear"
    cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode=mode, align_corners=False)[0, 0]
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else cam
    probability = float(logits.detach().softmax(-1)[0, target])
    return ClassActivation(cam, target, probability, predicted)


# ----------------------------------------------------------------------------- figures

def figure_size(num_panels: int, columns: int | None = None) -> tuple[int, int]:
    """(width, height) in pixels of a figure with ``num_panels`` panels (``columns`` per row, default up to
    ``MAX_COLUMNS``)."""
    columns = columns or min(num_panels, MAX_COLUMNS)
    rows = math.ceil(num_panels / columns)
    return columns * PANEL_PX, rows * PANEL_PX + TITLE_PX


def _figure(num_panels: int, title: str, columns: int | None = None) -> tuple[Figure, list]:
    columns = columns or min(num_panels, MAX_COLUMNS)
    width, height = figure_size(num_panels, columns)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    figure.suptitle(title, fontsize=10)
    rows = math.ceil(num_panels / columns)
    axes = [figure.add_subplot(rows, columns, i + 1) for i in range(num_panels)]
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return figure, axes


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))


def _frames_to_show(num_frames: int, limit: int, wanted: Sequence[int] | None = None) -> list[int]:
    """Up to ``limit`` frame indices: ``wanted`` ones when given, else evenly spread."""
    candidates = list(wanted) if wanted is not None else list(range(num_frames))
    if len(candidates) <= limit:
        return candidates
    picks = np.linspace(0, len(candidates) - 1, limit).round().astype(int)
    return [candidates[i] for i in picks]


def _frame_title(media: Media, frame: int) -> str:
    return f"frame {frame} (source {media.frame_indices[frame]})" if media.is_video else "input"


def _group_colours(groups: np.ndarray) -> np.ndarray:
    """(..., H, W) labels -> (..., H, W, 4) RGBA: alternating tints, white borders, nothing on -1."""
    from matplotlib import colormaps

    _, dense = np.unique(groups, return_inverse=True)
    dense = dense.reshape(groups.shape)
    palette = colormaps["tab10"](np.arange(10))
    rgba = palette[dense % 10].copy()
    rgba[..., 3] = 0.35
    border = np.zeros(groups.shape, dtype=bool)
    border[..., :-1, :] |= groups[..., :-1, :] != groups[..., 1:, :]
    border[..., :, :-1] |= groups[..., :, :-1] != groups[..., :, 1:]
    rgba[border] = (1.0, 1.0, 1.0, 0.9)
    rgba[groups < 0] = (0.0, 0.0, 0.0, 0.0)
    return rgba


def _size_text(sizes: Sequence[int]) -> str:
    return "x".join(str(s) for s in sizes)


def windows_figure(model: nn.Module, media: Media, stage: int, path: str | os.PathLike,
                   max_frames: int = 4) -> Path:
    """Window partition (W-MSA) and shifted-window regions (SW-MSA) of ``stage`` (0-based) over the input:
    two panels for an image; for a video, two rows (W-MSA, SW-MSA) over up to ``max_frames`` frames."""
    input_size = tuple(media.tensor.shape[2:])
    geometry = stage_geometry(model, input_size, stage)
    rules = model.layers[stage].blocks[0].rules
    no_shift = (0,) * len(geometry.grid)
    layouts = [("W-MSA windows", no_shift), ("SW-MSA regions (shifted windows)", geometry.shift)]
    pixel_groups = [to_pixels(attention_groups(geometry.grid, geometry.window, shift, rules.roll_before_pad),
                              input_size, geometry.token_size, fill=-1).numpy() for _, shift in layouts]
    frames = _frames_to_show(len(media.frames), max_frames)
    window_px = [w * t for w, t in zip(geometry.window, geometry.token_size)]
    extent = f"{_size_text(window_px[-2:])} px"
    if media.is_video:
        extent = f"{window_px[0]} frames x {extent}"
    title = (f"Windows of stage {stage + 1}: grid {_size_text(geometry.grid)} tokens\n"
             f"window {_size_text(geometry.window)} tokens = {extent}, shift {_size_text(geometry.shift)} tokens")
    figure, axes = _figure(len(layouts) * len(frames), title, columns=len(frames) if media.is_video else None)
    for row, ((name, _), groups) in enumerate(zip(layouts, pixel_groups)):
        for col, frame in enumerate(frames):
            ax = axes[row * len(frames) + col]
            ax.imshow(media.frames[frame])
            ax.imshow(_group_colours(groups[frame] if media.is_video else groups))
            label = f"{name}, {_frame_title(media, frame)}" if media.is_video else name
            ax.set_title(label, fontsize=8)
    return _save(figure, path)


def attention_figure(model: nn.Module, media: Media, result: AttentionMap, path: str | os.PathLike,
                     max_frames: int = 4) -> Path:
    """The query on the input, and the attention it gives over the input (one panel per frame for video)."""
    weights = result.weights.numpy()
    head = "mean over heads" if result.head is None else f"head {result.head}"
    kind = "" if result.shifted is None else (" (SW-MSA)" if result.shifted else " (W-MSA)")
    title = (f"Attention in stage {result.stage + 1}, block {result.block}{kind}, {head}\n"
             f"query at {'(t, y, x)' if media.is_video else '(y, x)'} = {result.query} (star)")
    if result.padding_weight > 1e-3:
        title += f" ({100 * result.padding_weight:.0f}% on padding)"
    if media.is_video:
        attended = [t for t in range(weights.shape[0]) if weights[t].max() > 0]
        frames = _frames_to_show(weights.shape[0], max_frames, attended or None)
        panels = [(f"{_frame_title(media, t)}{' (query)' if t == result.query[0] else ''}", t, weights[t])
                  for t in frames]
        figure, axes = _figure(len(panels), title)
    else:
        panels = [("attention weight", 0, weights)]
        figure, axes = _figure(2, title)
        axes[0].imshow(media.frames[0])
        axes[0].contour((weights > 0).astype(float), levels=[0.5], colors="white", linewidths=1)
        axes[0].plot(result.query[-1], result.query[-2], marker="*", color="cyan", markersize=12)
        axes[0].set_title("input, query (star), attended area (outline)", fontsize=8)
        axes = axes[1:]
    vmax = float(weights.max()) or 1.0
    image = None
    for ax, (name, frame, heat) in zip(axes, panels):
        ax.imshow(media.frames[frame])
        image = ax.imshow(np.ma.masked_equal(heat, 0), cmap="inferno", alpha=0.6, vmin=0, vmax=vmax)
        if frame == (result.query[0] if media.is_video else 0):
            ax.plot(result.query[-1], result.query[-2], marker="*", color="cyan", markersize=12)
        ax.set_title(name, fontsize=8)
    figure.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    return _save(figure, path)


def cam_figure(model: nn.Module, media: Media, result: ClassActivation, path: str | os.PathLike,
               class_names: Sequence[str] | None = None, max_frames: int = 8) -> Path:
    """Grad-CAM over the input (image: input and overlay; video: overlay per frame) with a colour bar."""
    name = class_names[result.target_class] if class_names else str(result.target_class)
    predicted = class_names[result.predicted_class] if class_names else str(result.predicted_class)
    title = f"Grad-CAM for class {name} (p = {result.probability:.3f})\npredicted class: {predicted}"
    cam = result.cam.numpy()
    if media.is_video:
        frames = _frames_to_show(cam.shape[0], max_frames)
        figure, axes = _figure(len(frames), title)
        panels = [(axes[i], frame, cam[frame], _frame_title(media, frame)) for i, frame in enumerate(frames)]
    else:
        figure, axes = _figure(2, title)
        axes[0].imshow(media.frames[0])
        axes[0].set_title("input", fontsize=8)
        panels = [(axes[1], 0, cam, "class activation")]
    image = None
    for ax, frame, heat, label in panels:
        ax.imshow(media.frames[frame])
        image = ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(label, fontsize=8)
    figure.colorbar(image, ax=[p[0] for p in panels], shrink=0.8, label="relative activation")
    return _save(figure, path)


def visualize(model: nn.Module, media: Media, out_dir: str | os.PathLike, kinds: Sequence[str] = KINDS, *,
              stage: int | None = None, block: int = -1, head: int | None = None,
              query: Sequence[int] | None = None, target_class: int | None = None,
              class_names: Sequence[str] | None = None, max_frames: int = 8) -> dict[str, Path]:
    """Write ``<input stem>_<kind>.png`` to ``out_dir`` for each of ``kinds`` ("windows", "attention",
    "cam"). ``stage`` is 0-based (default: the second-to-last stage, whose windows cover a good part of a
    224² input); ``block`` indexes that stage's blocks (default the last, a shifted one for even depths)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be some of {', '.join(KINDS)}, got {list(kinds)}")
    if "windows" in kinds and not hasattr(model, "layers"):
        raise ValueError(f"the window picture applies to Swin / Video Swin models; {type(model).__name__} has "
                         f"no windows (use attention or cam)")
    if class_names is not None and len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names given for a model with {model.num_classes} classes")
    num_stages = len(model.feature_info)
    stage = max(num_stages - 2, 0) if stage is None else stage
    model.eval()
    out_dir = Path(out_dir)
    stem = Path(media.path).stem
    written = {}
    if "windows" in kinds:
        written["windows"] = windows_figure(model, media, stage, out_dir / f"{stem}_windows.png", min(max_frames, 4))
    if "attention" in kinds:
        result = attention_map(model, media.tensor, stage, block, head, query)
        written["attention"] = attention_figure(model, media, result, out_dir / f"{stem}_attention.png", max_frames)
    if "cam" in kinds:
        result = grad_cam(model, media.tensor, target_class)
        written["cam"] = cam_figure(model, media, result, out_dir / f"{stem}_cam.png", class_names, max_frames)
    return written
