"""Reference cases from ../shared/refvectors: building the matching swinkit model and its outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import swinkit

REFVECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "refvectors"

SWIN_FAMILIES = {"ms_swin": "microsoft", "timm_swin": "timm", "timm_from_ms": "timm", "tv_swin": "torchvision",
                 "tv_swin3d": "torchvision", "video_swin_0x": "video_swin", "mmaction2_1x": "video_swin"}


def case_dirs(*families: str) -> list[Path]:
    if not REFVECTORS.is_dir():
        return []
    out = []
    for d in sorted(REFVECTORS.iterdir()):
        meta = d / "meta.json"
        if meta.is_file() and json.loads(meta.read_text())["family"] in families:
            out.append(d)
    return out


def require_refvectors() -> None:
    if not REFVECTORS.is_dir():
        pytest.fail(f"reference vectors not found at {REFVECTORS} (../shared must sit beside the repository)")


def load_meta(case: Path) -> dict:
    return json.loads((case / "meta.json").read_text())


def load_io(case: Path) -> dict:
    return torch.load(case / "io.pt", map_location="cpu", weights_only=True)


def swin_overrides(meta: dict) -> tuple[str, dict]:
    """(registry name, create_model overrides with official argument names) for a Swin-family case."""
    family = meta["family"]
    compat = SWIN_FAMILIES[family]
    if family in ("ms_swin", "timm_swin", "timm_from_ms"):
        cfg = dict(meta.get("config") or meta["timm_config"])
        return "swin_t", {**cfg, "compat": compat}
    if family in ("tv_swin", "tv_swin3d"):
        cfg = dict(meta["config"])
        cfg["drop_path_rate"] = cfg.pop("stochastic_depth_prob")
        return ("video_swin_t" if family == "tv_swin3d" else "swin_t"), {**cfg, "compat": compat}
    backbone = dict(meta["config"]["backbone"])
    head = meta["config"]["cls_head"]
    if "arch" in backbone:  # mmaction2 1.x names
        arch = backbone.pop("arch")
        backbone.update(embed_dim=arch["embed_dims"], depths=arch["depths"], num_heads=arch["num_heads"])
        out_indices = backbone.pop("out_indices", [len(arch["depths"]) - 1])
        backbone["norm_stages"] = [i for i in out_indices if i != len(arch["depths"]) - 1]
        for unused in ("pretrained", "pretrained2d"):
            backbone.pop(unused, None)
    return "video_swin_t", {**backbone, "num_classes": head["num_classes"], "compat": compat}


def build_swin_case(case: Path, dtype: torch.dtype = torch.float32):
    meta = load_meta(case)
    name, overrides = swin_overrides(meta)
    model = swinkit.create_model(name, **overrides)
    report = swinkit.load_checkpoint(model, case / "checkpoint.pth")
    return model.to(dtype).eval(), report


def swin_outputs(model, x: torch.Tensor, family: str) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` and name its intermediate tensors the way the case's io.pt does."""
    captured: dict[str, torch.Tensor] = {}
    hooks = [model.patch_embed.register_forward_hook(lambda m, i, o: captured.__setitem__("pe", o)),
             model.norm.register_forward_hook(lambda m, i, o: captured.__setitem__("norm", o))]
    for i, stage in enumerate(model.layers):
        hooks.append(stage.register_forward_hook(lambda m, inp, o, i=i: captured.__setitem__(f"blocks{i}", o)))
        if stage.downsample is not None:
            hooks.append(stage.downsample.register_forward_hook(
                lambda m, inp, o, i=i: captured.__setitem__(f"down{i}", o)))
    num_stages = len(model.layers)
    try:
        with torch.no_grad():
            feats = model.forward_features(x, out_indices=range(num_stages))
            logits = model.forward_head(feats)
            pooled = model.forward_head(feats, pre_logits=True)
    finally:
        for h in hooks:
            h.remove()
    pe, norm = captured["pe"], captured["norm"]
    blocks = [captured[f"blocks{i}"] for i in range(num_stages)]
    stage_out = [captured.get(f"down{i}", blocks[i]) for i in range(num_stages)]
    flat = lambda t: t.flatten(1, -2)  # (B, *grid, C) -> (B, L, C)
    cf = lambda t: t.movedim(-1, 1)  # channels-last -> channels-first
    out = {"logits": logits}
    if family == "ms_swin":
        out.update(patch_embed=flat(pe), final_norm=flat(norm), pooled=pooled)
        for i in range(num_stages):
            out[f"stage{i}.blocks_out"] = flat(blocks[i])
            out[f"stage{i}.out"] = flat(stage_out[i])
    elif family in ("timm_swin", "timm_from_ms"):
        out.update(patch_embed=pe, final_norm=norm, pooled=pooled)
        for i in range(num_stages):
            out[f"stage{i}.out"] = blocks[i]
            out[f"intermediates_nchw.{i}"] = feats[i]
    elif family in ("tv_swin", "tv_swin3d"):
        video = family == "tv_swin3d"
        out["final_norm"] = norm
        if video:
            out["patch_embed"] = pe
        else:
            out["features.0"] = pe
        for i in range(num_stages):
            out[f"features.{2 * i + (0 if video else 1)}"] = blocks[i]
            if f"down{i}" in captured:
                out[f"features.{2 * i + (1 if video else 2)}"] = captured[f"down{i}"]
    else:  # video_swin_0x, mmaction2_1x
        out["backbone.patch_embed"] = cf(pe)
        out["backbone.out"] = cf(norm)
        for i in range(num_stages):
            out[f"backbone.stage{i}.blocks_out"] = blocks[i]
            out[f"backbone.stage{i}.out"] = cf(stage_out[i])
            out[f"backbone.out.{i}"] = feats[i]
    return out


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> None:
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.to(expected.dtype) - expected).abs()
    bound = atol + rtol * expected.abs()
    worst = (diff - bound).max().item()
    assert worst <= 0, f"{name}: max |diff| {diff.max().item():.3e} exceeds {atol:g} + {rtol:g}*|ref|"
