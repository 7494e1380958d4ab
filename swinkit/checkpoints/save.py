"""``save_checkpoint``: swinkit-native safetensors, or any official layout, written atomically."""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import torch
import torch.nn as nn

from swinkit.checkpoints import formats
from swinkit.checkpoints.adapt import crop_rel_pos_table
from swinkit.checkpoints.io import atomic_save_safetensors, atomic_torch_save

# Layouts each family can be written in ("swinkit" is every family's native one).
FAMILY_FORMATS = {
    "swin": ("swinkit", "microsoft", "timm", "torchvision"),
    "video_swin": ("swinkit", "torchvision", "video_swin", "mmaction2"),
    "shunted": ("swinkit", "shunted"),
}
# How the official code wraps the state dict in its own .pth files.
_WRAPPER = {"microsoft": "model", "shunted": "model", "video_swin": "state_dict", "mmaction2": "state_dict"}


def _version() -> str:
    from swinkit import __version__

    return __version__


def _config_json(model: nn.Module) -> str:
    return json.dumps(dataclasses.asdict(model.config))


def _check_exportable(model: nn.Module, fmt: str) -> None:
    family = getattr(model, "family", None)
    if family not in FAMILY_FORMATS:
        raise ValueError(f"save_checkpoint needs a swinkit model (Swin, Video Swin or Shunted), got "
                         f"{type(model).__name__}")
    if fmt not in FAMILY_FORMATS[family]:
        raise ValueError(f"a {family} model cannot be written in the {fmt!r} layout; "
                         f"expected one of {FAMILY_FORMATS[family]}")
    if family == "shunted" or fmt == "swinkit":
        return
    if model.config.norm_stages and fmt != "mmaction2":
        raise ValueError(f"the {fmt!r} layout has no per-stage norms (norm_stages={model.config.norm_stages}); "
                         "write it as 'mmaction2' or 'swinkit'")
    if model.config.ape and fmt != "microsoft":
        raise ValueError(f"the {fmt!r} layout has no absolute position embedding; write it as 'microsoft' "
                         "or 'swinkit'")


def official_table_windows(model: nn.Module, fmt: str) -> list[tuple[int, ...]]:
    """Window each stage's bias table has in the official ``fmt`` model of the same config.

    Microsoft (both axes at the smallest side) and timm (per axis) build tables for the window
    clamped to the stage grid at ``img_size``; every other layout for the configured window.
    """
    from swinkit.layers.compat import clamp_window

    config = model.config
    window, num_stages = tuple(config.window_size), len(config.depths)
    if fmt not in ("microsoft", "timm") or config.img_size is None:
        return [window] * num_stages
    patch = config.patch_size
    grid = tuple(s // p if fmt == "timm" else -(-s // p) for s, p in zip(config.img_size, patch))
    out = []
    for _ in range(num_stages):
        out.append(clamp_window(grid, window, window, "min_side" if fmt == "microsoft" else "per_axis")[0])
        grid = tuple(-(-g // 2) for g in grid)
    return out


def _official_tables(model: nn.Module, state: dict, fmt: str) -> dict:
    """``state`` with every bias table shaped as the official ``fmt`` model expects (cropped if smaller)."""
    wanted = official_table_windows(model, fmt)
    out = dict(state)
    for i, stage in enumerate(model.layers):
        for j, block in enumerate(stage.blocks):
            have, want = tuple(block.attn.table_window), wanted[i]
            if have == want:
                continue
            if any(w > h for w, h in zip(want, have)):
                raise ValueError(f"stage {i}'s bias tables cover window {have}, but the {fmt!r} model of this "
                                 f"config expects {want}; build the model with compat={fmt!r} first (load_model(..., "
                                 f"compat={fmt!r}), or --set compat={fmt} on the command line)")
            key = f"layers.{i}.blocks.{j}.attn.relative_position_bias_table"
            out[key] = crop_rel_pos_table(state[key], have, want)
    return out


_MS_BLOCK = re.compile(r"^layers\.\d+\.blocks\.\d+\.")


def _with_derived(model: nn.Module, official: dict, fmt: str) -> dict:
    """Official state dict with its derived buffers placed where the official code keeps them:
    an index right after its table, a Microsoft mask (a block buffer) before the block's layers."""
    derived = formats.derived_buffers(model, fmt)
    ordered: dict[str, torch.Tensor] = {}
    for key, value in official.items():
        block = _MS_BLOCK.match(key)
        if block and block[0] + "attn_mask" in derived:
            ordered[block[0] + "attn_mask"] = derived.pop(block[0] + "attn_mask")
        ordered[key] = value
        index_key = key.replace("relative_position_bias_table", "relative_position_index")
        if index_key != key and index_key in derived:
            ordered[index_key] = derived.pop(index_key)
    ordered.update(derived)
    return ordered


def save_checkpoint(model: nn.Module, path: str | os.PathLike, format: str = "swinkit") -> Path:
    """Write ``model``'s weights to ``path`` atomically; returns the path.

    ``format="swinkit"`` (default): a ``.safetensors`` file whose metadata holds the format, family,
    compat mode and the full config, so :func:`swinkit.load_model` needs no hints. Official layouts
    ("microsoft", "timm", "torchvision" for 2D; "torchvision", "video_swin" (0.x), "mmaction2"
    (1.x) for video; "shunted") use the official key names, derived buffers and file wrapping
    (``{'model': sd}`` for Microsoft / Shunted, ``{'meta', 'state_dict'}`` with ``backbone.`` /
    ``cls_head.`` prefixes for Video Swin / mmaction2, a plain state dict otherwise); with a
    ``.safetensors`` path they are written as flat safetensors instead.
    """
    if format not in formats.ALL_FORMATS:
        raise ValueError(f"unknown checkpoint format {format!r}; expected one of {formats.ALL_FORMATS}")
    _check_exportable(model, format)
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if format == "swinkit":
        if path.suffix != ".safetensors":
            raise ValueError(f"swinkit checkpoints are safetensors files: expected a .safetensors path, got {path}")
        metadata = {"format": "swinkit", "family": model.family, "config": _config_json(model),
                    "compat": json.dumps(getattr(model, "compat", None)), "swinkit_version": _version()}
        return atomic_save_safetensors(state, path, metadata)
    if model.family != "shunted":
        num_stages, video = len(model.layers), model.config.ndim == 3
        state = formats.from_native(_official_tables(model, state, format), format, num_stages, video)
        state = _with_derived(model, state, format)
    if path.suffix == ".safetensors":
        return atomic_save_safetensors(state, path, {"format": format, "swinkit_version": _version()})
    wrapper = _WRAPPER.get(format)
    if wrapper == "state_dict":
        meta = {"generator": f"swinkit {_version()}", "config": _config_json(model)}
        return atomic_torch_save({"meta": meta, "state_dict": state}, path)
    return atomic_torch_save({wrapper: state} if wrapper else state, path)
