"""State-dict key layouts of the official implementations, as pure functions.

swinkit's native Swin keys::

    patch_embed.{proj,norm}.*, absolute_pos_embed, layers.{i}.blocks.{j}.{norm1,attn.qkv,attn.proj,
    attn.relative_position_bias_table,norm2,mlp.fc1,mlp.fc2}.*, layers.{i}.downsample.{norm,reduction}.*
    (end of stage i), stage_norms.{i}.*, norm.*, head.fc.*

Shunted keys are the official ones in every format. ``to_native`` / ``from_native`` rename keys;
derived buffers (relative position indices, attention masks, BatchNorm counters) are separated
out by :func:`split_derived` and rebuilt by :func:`derived_buffers` when writing an official layout.
"""
from __future__ import annotations

import re
from typing import Callable

import torch

SWIN_FORMATS = ("swinkit", "microsoft", "timm", "torchvision", "video_swin", "mmaction2")
ALL_FORMATS = SWIN_FORMATS + ("shunted",)
# Implementation whose padding semantics a checkpoint's format implies (for ``model.compat``).
FORMAT_COMPAT = {"microsoft": "microsoft", "timm": "timm", "torchvision": "torchvision",
                 "video_swin": "video_swin", "mmaction2": "video_swin"}
DERIVED_SUFFIXES = ("relative_position_index", "attn_mask", "relative_coords_table")

_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_DOWN = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")
_STAGE_NORM = re.compile(r"^stage_norms\.(\d+)\.(.+)$")
_MLP_TO_TV = {"mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.3."}


def _swap(text: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if text.startswith(old):
            return new + text[len(old):]
    return text


def is_derived(key: str) -> bool:
    """Buffers that are functions of the config, never loaded: relative position indices, masks."""
    return key.rsplit(".", 1)[-1] in DERIVED_SUFFIXES


def split_derived(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    kept = {k: v for k, v in state_dict.items() if not is_derived(k)}
    return kept, [k for k in state_dict if is_derived(k)]


# ----------------------------------------------------------------------------- native -> foreign
def _native_to_microsoft(key: str, num_stages: int) -> str:
    return "head." + key[len("head.fc."):] if key.startswith("head.fc.") else key


def _native_to_timm(key: str, num_stages: int) -> str:
    m = _DOWN.match(key)
    return f"layers.{int(m[1]) + 1}.downsample.{m[2]}" if m else key


def _native_to_torchvision(key: str, num_stages: int, video: bool) -> str:
    offset = 0 if video else 1
    if m := _BLOCK.match(key):
        return f"features.{2 * int(m[1]) + offset}.{m[2]}.{_swap(m[3], _MLP_TO_TV)}"
    if m := _DOWN.match(key):
        return f"features.{2 * int(m[1]) + offset + 1}.{m[2]}"
    if not video:
        key = _swap(key, {"patch_embed.proj.": "features.0.0.", "patch_embed.norm.": "features.0.2."})
    return _native_to_microsoft(key, num_stages)


def _native_to_mmaction(key: str, num_stages: int, version: str) -> str:
    if key.startswith("head.fc."):
        return "cls_head.fc_cls." + key[len("head.fc."):]
    if version == "1.x":
        if key.startswith("norm."):
            key = f"norm{num_stages - 1}." + key[len("norm."):]
        elif m := _STAGE_NORM.match(key):
            key = f"norm{m[1]}.{m[2]}"
    return "backbone." + key


def native_key_to(fmt: str, key: str, num_stages: int, video: bool) -> str:
    """Rename one native key into ``fmt``'s layout."""
    if fmt in ("swinkit", "shunted"):
        return key
    if fmt == "microsoft":
        return _native_to_microsoft(key, num_stages)
    if fmt == "timm":
        return _native_to_timm(key, num_stages)
    if fmt == "torchvision":
        return _native_to_torchvision(key, num_stages, video)
    if fmt == "video_swin":
        return _native_to_mmaction(key, num_stages, "0.x")
    if fmt == "mmaction2":
        return _native_to_mmaction(key, num_stages, "1.x")
    raise ValueError(f"unknown checkpoint format {fmt!r}; expected one of {ALL_FORMATS}")


# ----------------------------------------------------------------------------- foreign -> native
def _microsoft_to_native(key: str) -> str:
    return "head.fc." + key[len("head."):] if key.startswith("head.") and not key.startswith("head.fc.") else key


def _timm_to_native(key: str) -> str:
    m = _DOWN.match(key)
    return f"layers.{int(m[1]) - 1}.downsample.{m[2]}" if m else key


_TV_BLOCK = re.compile(r"^features\.(\d+)\.(\d+)\.(norm1|norm2|attn|mlp)\.(.+)$")
_TV_OTHER = re.compile(r"^features\.(\d+)\.(.+)$")
_MLP_FROM_TV = {v: k for k, v in _MLP_TO_TV.items()}


def _torchvision_to_native(key: str, video: bool) -> str:
    offset = 0 if video else 1
    if not video and key.startswith("features.0."):
        return _swap(key, {"features.0.0.": "patch_embed.proj.", "features.0.2.": "patch_embed.norm."})
    if m := _TV_BLOCK.match(key):
        return f"layers.{(int(m[1]) - offset) // 2}.blocks.{m[2]}.{_swap(m[3] + '.' + m[4], _MLP_FROM_TV)}"
    if m := _TV_OTHER.match(key):
        return f"layers.{(int(m[1]) - offset - 1) // 2}.downsample.{m[2]}"
    return _microsoft_to_native(key)


_MM_NORM = re.compile(r"^norm(\d+)\.(.+)$")


def _mmaction_to_native(key: str, num_stages: int) -> str:
    if key.startswith("cls_head.fc_cls."):
        return "head.fc." + key[len("cls_head.fc_cls."):]
    if key.startswith("backbone."):
        key = key[len("backbone."):]
    if m := _MM_NORM.match(key):
        return f"norm.{m[2]}" if int(m[1]) == num_stages - 1 else f"stage_norms.{m[1]}.{m[2]}"
    return key


def native_key_from(fmt: str, key: str, num_stages: int, video: bool) -> str:
    """Rename one key of ``fmt``'s layout into the native layout."""
    if fmt in ("swinkit", "shunted"):
        return key
    if fmt == "microsoft":
        return _microsoft_to_native(key)
    if fmt == "timm":
        return _timm_to_native(key)
    if fmt == "torchvision":
        return _torchvision_to_native(key, video)
    if fmt in ("video_swin", "mmaction2"):
        return _mmaction_to_native(key, num_stages)
    raise ValueError(f"unknown checkpoint format {fmt!r}; expected one of {ALL_FORMATS}")


def _rename_all(state_dict: dict, rename: Callable[[str], str]) -> dict:
    out = {}
    for key, value in state_dict.items():
        new = rename(key)
        if new in out:
            raise ValueError(f"two checkpoint keys map to {new!r}")
        out[new] = value
    return out


def to_native(state_dict: dict, fmt: str, num_stages: int | None = None, video: bool | None = None) -> dict:
    """Rename a ``fmt`` state dict (derived buffers included or not) into native keys."""
    num_stages = num_stages if num_stages is not None else count_stages(state_dict, fmt)
    video = video if video is not None else is_video_state(state_dict)
    return _rename_all(state_dict, lambda k: native_key_from(fmt, k, num_stages, video))


def from_native(state_dict: dict, fmt: str, num_stages: int, video: bool) -> dict:
    """Rename a native state dict into ``fmt``'s keys (derived buffers are added separately)."""
    return _rename_all(state_dict, lambda k: native_key_to(fmt, k, num_stages, video))


# ----------------------------------------------------------------------------- detection
def unwrap(obj) -> tuple[dict, str | None]:
    """Find the state dict inside a checkpoint object; returns (state_dict, wrapper key or None)."""
    if isinstance(obj, dict):
        for wrapper in ("model", "state_dict", "module"):
            inner = obj.get(wrapper)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner, wrapper
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, None
    raise ValueError("no state dict found: expected a dict of tensors, or one under 'model', 'state_dict' "
                     "or 'module'")


def is_video_state(state_dict: dict) -> bool:
    for key in ("patch_embed.proj.weight", "backbone.patch_embed.proj.weight", "features.0.0.weight"):
        if key in state_dict:
            return state_dict[key].ndim == 5
    return False


def state_family(state_dict: dict) -> str:
    """Model family a state dict (any layout) belongs to: "shunted", "video_swin" or "swin"."""
    if any(k.startswith("patch_embed1.") for k in state_dict):
        return "shunted"
    return "video_swin" if is_video_state(state_dict) else "swin"


def detect_format(state_dict: dict) -> str:
    """Name of the layout of ``state_dict`` (one of :data:`ALL_FORMATS`); ValueError if unknown."""
    keys = set(state_dict)
    if any(k.startswith("patch_embed1.") for k in keys):
        return "shunted"
    if any(k.startswith(("backbone.", "cls_head.")) for k in keys):
        if any(_MM_NORM.match(k[len("backbone."):]) for k in keys if k.startswith("backbone.")):
            return "mmaction2"
        if "backbone.patch_embed.proj.weight" in keys:
            return "video_swin"
    if any(k.startswith("features.") for k in keys):
        return "torchvision"
    if "patch_embed.proj.weight" in keys and any(k.startswith("layers.") for k in keys):
        if any(_MM_NORM.match(k) for k in keys):  # an mmaction2 1.x backbone saved without its prefix
            return "mmaction2"
        stages = sorted({int(k.split(".")[1]) for k in keys if k.startswith("layers.")})
        downsampled = {int(m[1]) for k in keys if (m := _DOWN.match(k))}
        has_index = any(k.endswith("relative_position_index") for k in keys)
        if downsampled and 0 not in downsampled:
            return "timm"
        if is_video_state(state_dict) and (has_index or "head.fc.weight" not in keys):
            return "video_swin"  # a Video Swin 0.x backbone saved without its prefix
        if "head.weight" in keys or has_index or any(k.endswith("attn_mask") for k in keys):
            return "microsoft"
        if "head.fc.weight" in keys and stages and stages[-1] in downsampled:
            return "timm"
        return "swinkit"
    raise ValueError("unknown checkpoint layout: expected Microsoft Swin, timm, torchvision, Video Swin / mmaction2, "
                     f"Shunted or swinkit keys; first keys are {sorted(keys)[:5]}")


def count_stages(state_dict: dict, fmt: str) -> int:
    """Number of stages in a state dict of layout ``fmt``."""
    if fmt == "torchvision":
        video = is_video_state(state_dict)
        idx = {int(k.split(".")[1]) for k in state_dict if k.startswith("features.")}
        if not video:
            idx.discard(0)
        last = max(idx)
        return (last - (0 if video else 1)) // 2 + 1
    keys = [k[len("backbone."):] if k.startswith("backbone.") else k for k in state_dict]
    stages = {int(k.split(".")[1]) for k in keys if k.startswith("layers.")}
    if not stages:
        raise ValueError("no 'layers.N' keys: not a Swin checkpoint")
    return max(stages) + 1


def derived_buffers(model, fmt: str) -> dict[str, torch.Tensor]:
    """Persistent buffers the official ``fmt`` code stores, rebuilt from a swinkit Swin ``model``.

    Microsoft: (N, N) relative position index in every block and the shift mask of every shifted
    block at ``img_size``; torchvision 2D: the index flattened to (N*N,); torchvision 3D, Video Swin
    and mmaction2: (N, N) index. timm and swinkit store none.
    """
    from swinkit.layers.windows import relative_position_index, shifted_window_mask

    if fmt in ("timm", "swinkit", "shunted"):
        return {}
    num_stages, video = len(model.layers), model.config.ndim == 3
    grids = model._stage_grids(model.config.img_size) if fmt == "microsoft" else None
    if fmt == "microsoft" and grids is None:
        raise ValueError("the Microsoft layout stores attention masks for a fixed input size: build the model "
                         "with img_size=...")
    out = {}
    for i, stage in enumerate(model.layers):
        for j, block in enumerate(stage.blocks):
            index = relative_position_index(block.attn.table_window).clone()
            prefix = native_key_to(fmt, f"layers.{i}.blocks.{j}.attn.", num_stages, video)
            out[prefix + "relative_position_index"] = index.flatten() if fmt == "torchvision" and not video else index
            if fmt == "microsoft" and j % 2:
                window, shift = stage.window_plan(grids[i])
                if any(shift):
                    out[f"layers.{i}.blocks.{j}.attn_mask"] = shifted_window_mask(grids[i], window, shift).clone()
    return out
