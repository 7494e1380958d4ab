"""Shunted Transformer: official numerics, any input size, the common model API, parameters and MACs."""
from __future__ import annotations

import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import swinkit
from swinkit.deploy.info import flop_formulas
from swinkit.models import shunted
from swinkit.models.registry import create_model, list_models
from swinkit.models.shunted import ShuntedAttention, ShuntedConfig

from refcases import REFVECTORS
VARIANTS = ("shunted_t", "shunted_s", "shunted_b")
# every shunted_* case present, plus the two public ones, so that a missing folder fails instead of vanishing
CASES = sorted({p.name for p in REFVECTORS.glob("shunted_*")} | {"shunted_p1", "shunted_p2"})
# a small model with the official structure (sr 8,4,2,1, stem of num_conv 1) for API tests
TINY = dict(embed_dims=(64, 32, 32, 48), num_heads=(2, 2, 4, 4), mlp_ratios=(2, 2, 2, 2), depths=(1, 1, 1, 1),
            num_conv=1)
VARIANT_TABLE = {  # models.md 1.3: depths, num_conv, drop_path of the training config, GMACs at 224
    "shunted_t": ((1, 2, 4, 1), 0, 0.1, 2.15),
    "shunted_s": ((2, 4, 12, 1), 1, 0.2, 4.99),
    "shunted_b": ((3, 4, 24, 2), 2, 0.3, 8.15),
}


@functools.lru_cache(maxsize=None)
def shared_model(name: str, small_depth: bool = False) -> torch.nn.Module:
    """One eval-mode model per (variant, depth) for the read-only tests; built once per module."""
    torch.manual_seed(0)
    return create_model(name, **({"depths": (1, 1, 1, 1)} if small_depth else {})).eval()


def tiny_model(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("shunted_t", **{**TINY, **overrides})


def load_case(case: str) -> tuple[dict, dict, dict]:
    root = REFVECTORS / case
    meta = json.loads((root / "meta.json").read_text())
    checkpoint = torch.load(root / "checkpoint.pth", map_location="cpu", weights_only=True)
    io = torch.load(root / "io.pt", map_location="cpu", weights_only=True)
    return meta, checkpoint, io


def build_from_meta(meta: dict, checkpoint: dict) -> torch.nn.Module:
    config = dict(meta["config"])
    assert config.pop("norm_eps") == shunted.BLOCK_NORM_EPS
    model = create_model("shunted_t", **config)
    report = swinkit.load_checkpoint(model, checkpoint)  # the official {'model': state_dict} layout, strict
    assert report.source_format == "shunted" and report.ok
    return model.eval()


def run_with_taps(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The refvector outputs: stage{i}.patch_embed / stage{i}.norm tokens (B, N, C), pooled, logits.

    Stage maps and logits come from a hook-free run (the in-place inference path); the patch
    embeddings from a second run with hooks (which takes the plain path)."""
    taps: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        maps = model.forward_features(x, out_indices=range(model.num_stages))
        taps["pooled"] = model.forward_head(maps, pre_logits=True)
        taps["logits"] = model.forward_head(maps)
    hooks = [getattr(model, f"patch_embed{i + 1}").register_forward_hook(
        lambda module, args, output, i=i: taps.__setitem__(f"stage{i}.patch_embed", output[0]))
        for i in range(model.num_stages)]
    with torch.no_grad():
        model.forward_features(x, out_indices=range(model.num_stages))
    for hook in hooks:
        hook.remove()
    for i, stage_map in enumerate(maps):
        taps[f"stage{i}.norm"] = stage_map.flatten(2).transpose(1, 2)
    return taps


@pytest.mark.parametrize("case", CASES)
def test_matches_official_fp32(case):
    meta, checkpoint, io = load_case(case)
    taps = run_with_taps(build_from_meta(meta, checkpoint), io["input"])
    assert set(io["outputs"]) <= set(taps)
    for name, ref in io["outputs"].items():
        assert taps[name].shape == ref.shape, name
        excess = (taps[name] - ref).abs() - (1e-5 + 1e-5 * ref.abs())
        assert excess.max() <= 0, f"{case} {name}: max |diff| {(taps[name] - ref).abs().max():.3g}"


@pytest.mark.parametrize("case", CASES)
def test_matches_official_fp64(case):
    meta, checkpoint, io = load_case(case)
    model = build_from_meta(meta, checkpoint).double()
    taps = run_with_taps(model, io["input"].double())
    assert {"logits", "pooled"} <= set(io["outputs_fp64"])
    for name, ref in io["outputs_fp64"].items():
        assert taps[name].dtype == torch.float64
        torch.testing.assert_close(taps[name], ref, rtol=0, atol=1e-10, msg=f"{case} {name}")


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_matches_table_and_manifest(name):
    """Config per models.md 1.3; parameter count, key names/shapes and MACs per the official manifests."""
    manifest = json.loads((REFVECTORS / "manifests" / f"shunted__{name}.json").read_text())
    depths, num_conv, drop_path_rate, gmacs = VARIANT_TABLE[name]
    assert name in list_models("shunted_*")
    with torch.device("meta"):
        model = create_model(name).eval()
        x = torch.empty(manifest["input_for_macs"])
    config = model.config
    assert (config.depths, config.num_conv, config.drop_path_rate) == (depths, num_conv, drop_path_rate)
    assert config.embed_dims == (64, 128, 256, 512) and config.num_heads == (2, 4, 8, 16)
    assert config.mlp_ratios == (8, 8, 4, 4) and config.sr_ratios == (8, 4, 2, 1) and config.qkv_bias
    assert model.family == "shunted" and model.num_features == 512 and model.num_classes == 1000
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"]
    shapes = {key: [list(t.shape), str(t.dtype).removeprefix("torch.")] for key, t in model.state_dict().items()}
    assert shapes == manifest["keys"]
    # flop_formulas adds the in-place matrix product (addmm_) the inference path accumulates with
    with FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter, torch.no_grad():
        model(x)
    macs = counter.get_total_flops() / 2
    assert macs == pytest.approx(manifest["macs_flopcounter_meta"], rel=0.01)
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.01)


def expected_grids(height: int, width: int, num_stages: int = 4) -> list[tuple[int, int]]:
    """Stem: 7x7/2 pad 3 then 2x2/2; later stages: 3x3/2 pad 1."""
    grid = tuple((s + 1) // 2 // 2 for s in (height, width))
    grids = [grid]
    for _ in range(num_stages - 1):
        grid = tuple((s - 1) // 2 + 1 for s in grid)
        grids.append(grid)
    return grids


SIZES = [(32, 32), (61, 97), (224, 224), (225, 300), (512, 384)]


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_any_input_size(name, size):
    # the real variants on the small sizes; one block per stage on the large ones keeps the module fast
    model = shared_model(name, small_depth=size[0] * size[1] > 64 * 64)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        maps = model.forward_features(x, out_indices=(0, 1, 2, 3))
        logits = model.forward_head(maps)
    assert [tuple(m.shape) for m in maps] == [(1, c, *g) for c, g in zip((64, 128, 256, 512), expected_grids(*size))]
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_grid_smaller_than_reduction_is_zero_padded():
    """sr 8 everywhere: stages 2-3 of a 64x64 input have 8x8 / 4x4 / 2x2 grids (the official code raises)."""
    model = tiny_model(sr_ratios=(8, 8, 8, 1)).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


def reference_branch(attn, q, x_map, reduce, norm, kv, local_conv):
    """Spec of one head group with explicit zero padding of the grid up to the kernel (q: (B, h, N, hd))."""
    kernel = reduce.kernel_size[0]
    padded = F.pad(x_map, (0, max(kernel - x_map.shape[3], 0), 0, max(kernel - x_map.shape[2], 0)))
    reduced = F.conv2d(padded, reduce.weight, reduce.bias, stride=kernel)
    grid = reduced.shape[2:]
    tokens = F.gelu(F.layer_norm(reduced.flatten(2).transpose(1, 2), (x_map.shape[1],), norm.weight, norm.bias, 1e-5))
    k, v = (tokens @ kv.weight.T + kv.bias).chunk(2, dim=-1)
    v_map = v.transpose(1, 2).reshape(v.shape[0], -1, *grid)
    local = F.conv2d(v_map, local_conv.weight, local_conv.bias, padding=1, groups=v_map.shape[1])
    v = v + local.flatten(2).transpose(1, 2)
    heads, head_dim = q.shape[1], q.shape[3]
    k = k.unflatten(-1, (heads, head_dim)).transpose(1, 2)
    v = v.unflatten(-1, (heads, head_dim)).transpose(1, 2)
    weights = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
    return (weights @ v).transpose(1, 2).flatten(2)


def test_small_grid_padding_semantics():
    torch.manual_seed(0)
    attn = ShuntedAttention(dim=32, num_heads=4, sr_ratio=8).double().eval()
    grid = (5, 6)  # smaller than the 8x8 kernel, not smaller than the 4x4 one
    x = torch.randn(2, 30, 32, dtype=torch.float64)
    with torch.no_grad():
        out = attn(x, grid)
        q = attn.q(x).unflatten(-1, (4, 8)).transpose(1, 2)
        x_map = x.transpose(1, 2).reshape(2, 32, *grid)
        expected = attn.proj(torch.cat([
            reference_branch(attn, q[:, :2], x_map, attn.sr1, attn.norm1, attn.kv1, attn.local_conv1),
            reference_branch(attn, q[:, 2:], x_map, attn.sr2, attn.norm2, attn.kv2, attn.local_conv2)], dim=-1))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_grad_checkpointing_gives_the_same_gradients(monkeypatch):
    model = tiny_model(num_classes=10, drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.2).train()
    x = torch.randn(2, 3, 32, 40)
    block_calls = []
    block_forward = shunted.ShuntedBlock.forward
    monkeypatch.setattr(shunted.ShuntedBlock, "forward",
                        lambda self, *args: block_calls.append(1) or block_forward(self, *args))

    def gradients(enable: bool) -> dict[str, torch.Tensor]:
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(123)
        model(x).square().sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients(False)
    assert len(block_calls) == 4
    recomputed = gradients(True)
    assert len(block_calls) == 12  # forward + recomputation in the backward pass
    assert plain.keys() == recomputed.keys()
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=0, atol=0, msg=name)


def test_forward_features_and_head_api():
    model = tiny_model(num_classes=7).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        last = model.forward_features(x)
        all_maps = model.forward_features(x, out_indices=(0, 1, 2, 3))
        some = model.forward_features(x, out_indices=(-1, 1))
        logits = model(x)
        pooled = model.forward_head(last[0], pre_logits=True)
    assert len(last) == 1 and torch.equal(last[0], all_maps[3])
    assert torch.equal(some[0], all_maps[3]) and torch.equal(some[1], all_maps[1])
    assert [info["num_chs"] for info in model.feature_info] == [m.shape[1] for m in all_maps]
    assert [info["reduction"] for info in model.feature_info] == [64 // m.shape[2] for m in all_maps]
    assert [info["module"] for info in model.feature_info] == ["norm1", "norm2", "norm3", "norm4"]
    torch.testing.assert_close(pooled, all_maps[3].flatten(2).mean(-1))
    torch.testing.assert_close(logits, model.head(pooled))
    with pytest.raises(ValueError, match="out_indices"):
        model.forward_features(x, out_indices=(4,))
    with pytest.raises(ValueError, match="forward_head"):
        model.forward_head(torch.randn(2, 32, 4, 6))


def test_reset_classifier_and_frozen_config():
    model = tiny_model()
    model.reset_classifier(5)
    assert model.head.out_features == 5 and model.num_classes == 5 and model.config.num_classes == 5
    model.reset_classifier(0)
    assert isinstance(model.head, torch.nn.Identity)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 48)
    with pytest.raises(AttributeError):
        model.config.num_classes = 3
    assert isinstance(model.config, ShuntedConfig)


@pytest.mark.parametrize("bad, match", [
    (torch.randn(3, 32, 32), "4-D"),
    (torch.randn(1, 1, 3, 32, 32), "4-D"),
    (torch.randn(1, 4, 32, 32), "channels"),
    (torch.randn(0, 3, 32, 32), "empty"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "floating-point"),
    (torch.randn(1, 3, 31, 64), "too small"),
    (torch.randn(1, 3, 64, 16), "too small"),
])
def test_bad_inputs_raise_value_error(bad, match):
    model = shared_model("shunted_t", small_depth=True)
    with pytest.raises(ValueError, match=match):
        model(bad)


@pytest.mark.parametrize("overrides, match", [
    ({"img_size": 224}, "unknown"),
    ({"sr_ratios": (8, 3, 2, 1)}, "even"),
    ({"num_heads": (3, 4, 8, 16), "embed_dims": (63, 128, 256, 512)}, "num_heads must be even"),
    ({"embed_dims": (64, 130, 256, 512)}, "multiple of num_heads"),
    ({"depths": (1, 2, 4)}, "same number"),
    ({"drop_path_rate": 1.0}, "drop_path_rate"),
])
def test_bad_configs_raise_value_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        create_model("shunted_t", **overrides)


def test_official_initialisation():
    model = shared_model("shunted_t", small_depth=True)
    assert model.block1[0].attn.q.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.block1[0].attn.q.bias.abs().max() == 0
    assert torch.equal(model.norm4.weight, torch.ones(512))
    conv = model.block1[0].mlp.dwconv.dwconv  # fan_out = 3*3*512/512 = 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 9), rel=0.1)
