"""Swin / Video Swin model API: registry, sizes, parameter and MAC counts, inputs, checkpointing, key layouts."""
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import swinkit
from swinkit.checkpoints import formats
from refcases import REFVECTORS

MANIFESTS = REFVECTORS / "manifests"
# registry name -> (Microsoft / Video Swin 0.x manifest stem)
VARIANTS = {
    "swin_t": "ms_swin__swin_tiny_patch4_window7_224", "swin_s": "ms_swin__swin_small_patch4_window7_224",
    "swin_b": "ms_swin__swin_base_patch4_window7_224", "swin_l": "ms_swin__swin_large_patch4_window7_224",
    "swin_b_384": "ms_swin__swin_base_patch4_window12_384", "swin_l_384": "ms_swin__swin_large_patch4_window12_384",
    "video_swin_t": "video_swin_0x__swin_tiny_patch244_window877_kinetics400_1k",
    "video_swin_s": "video_swin_0x__swin_small_patch244_window877_kinetics400_1k",
    "video_swin_b": "video_swin_0x__swin_base_patch244_window877_kinetics400_1k",
    "video_swin_l": "video_swin_0x__swin_large_patch244_window877_kinetics400_22k",
    "video_swin_b_ssv2": "video_swin_0x__swin_base_patch244_window1677_sthv2",
}
PAPER_GMACS = {"swin_t": 4.5, "swin_s": 8.7, "swin_b": 15.4, "swin_l": 34.5, "swin_b_384": 47.1, "swin_l_384": 103.9,
               "video_swin_t": 87.9, "video_swin_s": 165.9, "video_swin_b": 281.6, "video_swin_l": 604.0,
               "video_swin_b_ssv2": 320.6}


def manifest(stem: str) -> dict:
    return json.loads((MANIFESTS / f"{stem}.json").read_text())


def meta_model(name: str, **overrides):
    with torch.device("meta"):
        return swinkit.create_model(name, **overrides)


def test_registry_lists_every_variant():
    names = swinkit.list_models()
    assert set(VARIANTS) <= set(names)
    assert swinkit.list_models("video_swin_*") == sorted(n for n in VARIANTS if n.startswith("video"))
    with pytest.raises(ValueError, match="unknown model"):
        swinkit.create_model("swin_xxl")
    with pytest.raises(ValueError, match="unknown Swin argument"):
        swinkit.create_model("swin_t", windw_size=7)


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_and_mac_counts_equal_manifests(name):
    ref = manifest(VARIANTS[name])
    model = meta_model(name)
    params = sum(p.numel() for p in model.parameters())
    assert params == ref.get("num_params_with_head", ref["num_params"])
    x = torch.empty(ref["input_for_macs"], device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x)
    macs = counter.get_total_flops() / 2
    if model.config.ndim == 3:  # the manifest counts the backbone only
        macs -= model.num_features * model.num_classes
    assert macs == pytest.approx(ref["macs_flopcounter_meta"], rel=1e-5)
    assert macs / 1e9 == pytest.approx(PAPER_GMACS[name], rel=0.01)


MANIFEST_LAYOUTS = [  # (registry name, manifest stem, format, overrides)
    ("swin_t", "ms_swin__swin_tiny_patch4_window7_224", "microsoft", {}),
    ("swin_b_384", "ms_swin__swin_base_patch4_window12_384", "microsoft", {}),
    ("swin_t", "timm__swin_tiny_patch4_window7_224", "timm", {}),
    ("swin_l_384", "timm__swin_large_patch4_window12_384", "timm", {}),
    ("swin_t", "torchvision__swin_t", "torchvision", {}),
    ("swin_b", "torchvision__swin_b", "torchvision", {}),
    ("video_swin_t", "torchvision__swin3d_t", "torchvision", {}),
    ("video_swin_t", "video_swin_0x__swin_tiny_patch244_window877_kinetics400_1k", "video_swin", {}),
    ("video_swin_b_ssv2", "video_swin_0x__swin_base_patch244_window1677_sthv2", "video_swin", {}),
    ("video_swin_s", "mmaction2_1x__swin-small-p244-w877", "mmaction2", {}),
    ("video_swin_l", "mmaction2_1x__swin-large-p244-w877", "mmaction2", {}),
]


@pytest.mark.parametrize("name,stem,fmt,overrides", MANIFEST_LAYOUTS, ids=[m[1] for m in MANIFEST_LAYOUTS])
def test_state_dict_converts_to_and_from_official_layout(name, stem, fmt, overrides):
    ref = manifest(stem)
    official = {k: tuple(shape) for k, (shape, _dtype) in ref["keys"].items()}
    model = meta_model(name, **overrides)
    native = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    num_stages, video = len(model.layers), model.config.ndim == 3
    converted = formats.from_native(native, fmt, num_stages, video)
    converted.update({k: tuple(v.shape) for k, v in formats.derived_buffers(model, fmt).items()})
    assert set(converted) == set(official), (sorted(set(official) - set(converted))[:5],
                                             sorted(set(converted) - set(official))[:5])
    assert converted == official
    assert formats.detect_format(dict.fromkeys(official, torch.empty(0))) == fmt or fmt == "microsoft"
    back, _ = formats.split_derived(dict.fromkeys(official))
    assert set(formats.to_native(back, fmt, num_stages, video)) == set(native)


@pytest.mark.parametrize("shape", [(1, 3, 4, 4), (2, 3, 70, 90), (1, 3, 33, 129), (1, 3, 224, 224), (1, 3, 5, 300)])
@pytest.mark.parametrize("compat", [None, "microsoft", "timm", "torchvision", "video_swin"])
def test_image_model_accepts_any_size(shape, compat):
    model = swinkit.create_model("swin_t", embed_dim=8, num_heads=(1, 1, 2, 2), num_classes=3, compat=compat).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(shape), out_indices=(0, 1, 2, 3))
        logits = model(torch.randn(shape))
    assert logits.shape == (shape[0], 3) and torch.isfinite(logits).all()
    grid = [(s // 4 if model.rules.floor_patch else -(-s // 4)) for s in shape[2:]]
    for i, f in enumerate(feats):
        assert f.shape == (shape[0], 8 * 2 ** i, *grid)
        grid = [-(-g // 2) for g in grid]


@pytest.mark.parametrize("shape", [(1, 3, 1, 4, 4), (1, 3, 9, 37, 50), (2, 3, 16, 64, 48), (1, 3, 40, 32, 32)])
def test_video_model_accepts_any_size(shape):
    model = swinkit.create_model("video_swin_t", embed_dim=8, num_heads=(1, 1, 2, 2), num_classes=5).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(shape), out_indices=(0, 3))
        logits = model.forward_head(feats)
    t, h, w = -(-shape[2] // 2), -(-shape[3] // 4), -(-shape[4] // 4)
    assert feats[0].shape == (shape[0], 8, t, h, w)
    assert feats[1].shape[2] == t  # time is never merged
    assert logits.shape == (shape[0], 5)


@pytest.mark.parametrize("name,x,message", [
    ("swin_t", torch.randn(3, 64, 64), "4-D input"),
    ("swin_t", torch.randn(1, 1, 64, 64), "3 input channels"),
    ("swin_t", torch.zeros(0, 3, 64, 64), "empty"),
    ("swin_t", torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating-point"),
    ("video_swin_t", torch.randn(1, 3, 64, 64), r"5-D input \(B, 3, T, H, W\)"),
    ("swin_t", [1, 2, 3], "torch.Tensor"),
])
def test_bad_inputs_raise_one_clear_error(name, x, message):
    model = swinkit.create_model(name, embed_dim=8, num_heads=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=message):
        model(x)


def test_timm_compat_rejects_input_smaller_than_a_patch():
    model = swinkit.create_model("swin_t", embed_dim=8, num_heads=(1, 1, 1, 1), compat="timm")
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 3, 3, 64))


@pytest.mark.parametrize("name,shape", [("swin_t", (2, 3, 40, 56)), ("video_swin_t", (2, 3, 6, 36, 40)),
                                        ("swin_t", (2, 3, 56, 56))])  # the last: unpadded, token-order path
def test_gradient_checkpointing_gives_identical_gradients(name, shape):
    torch.manual_seed(0)
    model = swinkit.create_model(name, embed_dim=8, num_heads=(1, 2, 2, 2), depths=(2, 2, 2, 2), num_classes=4,
                                 drop_path_rate=0.0).double().train()
    x = torch.randn(shape, dtype=torch.float64)

    def grads(checkpointing: bool):
        model.zero_grad()
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(1)  # same dropout masks (head dropout is active in training)
        model(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys()
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=0, atol=1e-12, msg=n)


def test_head_api_and_drop_path_schedule():
    model = swinkit.create_model("video_swin_t", embed_dim=8, num_heads=(1, 1, 1, 1), depths=(1, 2, 3, 2),
                                 drop_path_rate=0.3)
    rates = [b.drop_path.p for s in model.layers for b in s.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 8).tolist())
    assert model.head.drop.p == 0.5  # I3D head dropout
    model.reset_classifier(7)
    feats = model.eval().forward_features(torch.randn(1, 3, 4, 32, 32))
    assert model.forward_head(feats).shape == (1, 7)
    assert model.forward_head(feats, pre_logits=True).shape == (1, 64)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 64)
