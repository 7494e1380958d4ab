"""2D -> 3D inflation equals the official inflate_weights (and the derived "center" variant), from any 2D layout."""
import pytest
import torch

import swinkit
from swinkit.checkpoints import load_checkpoint, load_model, save_checkpoint
from refcases import REFVECTORS, assert_close, load_io, load_meta

CASES = sorted(REFVECTORS.glob("inflate_*"))
# (mode, stored tensors, io.pt output) of each inflation variant
VARIANTS = [("inflate", "inflated_0x", "inflated_0x.backbone.out"),
            ("center", "inflated_center", "inflated_center_derived.backbone.out")]


def test_inflation_cases_present():
    assert len(CASES) >= 2


def video_model(case, **overrides):
    return swinkit.create_model("video_swin_t", **{**load_meta(case)["cfg3d_0x"], "num_classes": 0, **overrides})


def stored_inflation(case, name: str) -> dict:
    tensors = torch.load(case / "inflated_0x.pth", weights_only=True)
    if name == "inflated_center":  # every tensor as inflated_0x except the centre-initialised patch kernel
        tensors.update(torch.load(case / "inflated_center_derived_delta.pth", weights_only=True))
    return tensors


@pytest.mark.parametrize("mode,stored,output", VARIANTS, ids=[v[0] for v in VARIANTS])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_inflation_equals_the_official_tensors_and_outputs(case, mode, stored, output):
    model = video_model(case).eval()
    report = load_checkpoint(model, case / "checkpoint2d.pth", inflate=mode)
    assert report.ok and report.compat == "video_swin"  # a 2D source never sets a video model's compat
    assert "patch_embed.proj.weight" in report.resized and "head.weight" not in report.loaded
    state = model.state_dict()
    expected = stored_inflation(case, stored)
    assert set(expected) == set(state)
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=1e-6, msg=key)
    io = load_io(case)
    with torch.no_grad():
        assert_close(output, model.forward_features(io["input"])[-1], io["outputs"][output], atol=1e-5, rtol=1e-5)
        model.double()
        out64 = model.forward_features(io["input"].double())[-1]
    assert_close(output, out64, io["outputs_fp64"][output], atol=1e-10, rtol=0)


def test_mmaction2_1x_inflation_renames_the_final_norm(tmp_path):
    case = REFVECTORS / "inflate_p1"
    model = video_model(case)
    load_checkpoint(model, case / "checkpoint2d.pth")
    written = torch.load(save_checkpoint(model, tmp_path / "mm.pth", format="mmaction2"), weights_only=True)
    backbone = {k[len("backbone."):]: v for k, v in written["state_dict"].items()
                if not k.endswith("relative_position_index")}
    expected = torch.load(case / "inflated_1x.pth", weights_only=True)
    assert set(backbone) == set(expected) and "norm3.weight" in backbone
    assert all(torch.equal(backbone[k], v) for k, v in expected.items())
    # the backbone files themselves (no 'backbone.' prefix; 1.x: norm3) load back as the same weights
    for stored, layout in (("inflated_1x.pth", "mmaction2"), ("inflated_0x.pth", "video_swin")):
        again = video_model(case)
        assert load_checkpoint(again, case / stored).source_format == layout
        assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name,layout", [("inflate_p1", "timm"), ("inflate_p1", "torchvision"),
                                         ("inflate_p1", "swinkit"), ("inflate_p2", "timm"), ("inflate_p2", "swinkit")])
def test_every_2d_layout_inflates_alike(name, layout, tmp_path):
    case = REFVECTORS / name  # p2: clamped 2D tables (stage 3 is 3x3) resized to 13x13 before tiling
    image_model = load_model(case / "checkpoint2d.pth")
    suffix = ".safetensors" if layout == "swinkit" else ".pth"
    converted = save_checkpoint(image_model, tmp_path / f"2d{suffix}", format=layout)
    model = video_model(case)
    report = load_checkpoint(model, converted)
    assert report.source_format == layout
    expected = stored_inflation(case, "inflated_0x")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


def test_inflating_keeps_a_classifier_only_on_request():
    case = REFVECTORS / "inflate_p1"
    model = video_model(case, num_classes=10)
    fresh = model.head.fc.weight.detach().clone()
    report = load_checkpoint(model, case / "checkpoint2d.pth")
    assert report.reinitialized == ["head.fc.weight", "head.fc.bias"] and torch.equal(model.head.fc.weight, fresh)
    assert "2D classifiers are not inflated" in str(report)
    head = torch.load(case / "checkpoint2d.pth", weights_only=True)["model"]["head.weight"]
    model = video_model(case, num_classes=3)
    load_checkpoint(model, case / "checkpoint2d.pth", class_subset=[4, 5, 6])
    assert torch.equal(model.head.fc.weight.detach(), head[4:7])
