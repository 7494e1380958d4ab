"""load_model builds every reference model and manifest from its tensors; conversions round-trip bit for bit."""
import json

import pytest
import torch

from swinkit.checkpoints import CheckpointError, describe_checkpoint, formats, inspect_checkpoint, load_model
from swinkit.checkpoints import save_checkpoint
from refcases import REFVECTORS, SWIN_FAMILIES, assert_close, case_dirs, load_io, load_meta, swin_outputs

SWIN_CASES = case_dirs(*SWIN_FAMILIES)
SHUNTED_CASES = case_dirs("shunted")
MANIFESTS = sorted((REFVECTORS / "manifests").glob("*.json"))
CASE_FORMAT = {"ms_swin": "microsoft", "timm_swin": "timm", "timm_from_ms": "timm", "tv_swin": "torchvision",
               "tv_swin3d": "torchvision", "video_swin_0x": "video_swin", "mmaction2_1x": "mmaction2",
               "shunted": "shunted"}
# registry model each manifest's architecture is
MANIFEST_VARIANT = {"swin_tiny": "swin_t", "swin_small": "swin_s", "swin_base": "swin_b", "swin_large": "swin_l",
                    "swin_t": "swin_t", "swin_s": "swin_s", "swin_b": "swin_b", "swin3d_t": "video_swin_t",
                    "swin3d_s": "video_swin_s", "swin3d_b": "video_swin_b", "swin-tiny": "video_swin_t",
                    "swin-small": "video_swin_s", "swin-base": "video_swin_b", "swin-large": "video_swin_l",
                    "shunted_t": "shunted_t", "shunted_s": "shunted_s", "shunted_b": "shunted_b"}
SHUNTED_HEADS = {"shunted_p1": (2, 2, 4, 4), "shunted_p2": (2, 2, 2, 4)}  # not stored in Shunted checkpoints


def test_reference_cases_present():
    assert len(SWIN_CASES) >= 10 and len(SHUNTED_CASES) >= 2 and len(MANIFESTS) >= 31


def expected_variant(stem: str) -> str:
    name = stem.split("__")[1]
    if "sthv2" in name:
        return "video_swin_b_ssv2"
    base = next(MANIFEST_VARIANT[k] for k in sorted(MANIFEST_VARIANT, key=len, reverse=True) if name.startswith(k))
    if "window877" in name and not base.startswith("video"):
        base = "video_" + base
    return base + ("_384" if "384" in name else "")


def official_state(path) -> dict:
    return formats.unwrap(torch.load(path, map_location="cpu", weights_only=True))[0]


def assert_same_tensors(original: dict, written: dict) -> None:
    assert set(written) == set(original), (sorted(set(original) - set(written))[:3],
                                           sorted(set(written) - set(original))[:3])
    for key, value in original.items():
        assert written[key].dtype == value.dtype and torch.equal(written[key], value), key


@pytest.mark.parametrize("case", SWIN_CASES, ids=[c.name for c in SWIN_CASES])
def test_swin_case_round_trips_and_reproduces_outputs(case, tmp_path):
    meta, io = load_meta(case), load_io(case)
    fmt = CASE_FORMAT[meta["family"]]
    info = inspect_checkpoint(case / "checkpoint.pth")
    assert info.format == fmt and info.report.ok and not info.report.resized
    native = save_checkpoint(info.model, tmp_path / "native.safetensors")
    model = load_model(native)  # the config comes from the file's metadata
    assert model.config == info.model.config
    back = save_checkpoint(model, tmp_path / "official.pth", format=fmt)
    assert_same_tensors(official_state(case / "checkpoint.pth"), official_state(back))
    outputs = swin_outputs(model, io["input"], meta["family"])
    for name, ref in io["outputs"].items():
        if not name.startswith("multiview."):
            assert_close(name, outputs[name], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", SHUNTED_CASES, ids=[c.name for c in SHUNTED_CASES])
def test_shunted_case_round_trips_and_reproduces_outputs(case, tmp_path):
    io = load_io(case)
    with pytest.raises(CheckpointError, match="do not store the number of heads.*pass num_heads"):
        load_model(case / "checkpoint.pth")
    model = load_model(case / "checkpoint.pth", num_heads=SHUNTED_HEADS[case.name])
    native = load_model(save_checkpoint(model, tmp_path / "native.safetensors"))
    assert native.config == model.config and native.family == "shunted"
    back = save_checkpoint(native, tmp_path / "official.pth", format="shunted")
    assert_same_tensors(official_state(case / "checkpoint.pth"), official_state(back))
    assert list(torch.load(back, weights_only=True)) == ["model"]
    with torch.no_grad():
        maps = native.forward_features(io["input"])
        assert_close("pooled", native.forward_head(maps, pre_logits=True), io["outputs"]["pooled"], 1e-5, 1e-5)
        assert_close("logits", native.forward_head(maps), io["outputs"]["logits"], 1e-5, 1e-5)


def test_microsoft_to_timm_equals_timm_checkpoint_filter_fn(tmp_path):
    model = load_model(REFVECTORS / "ms_swin_p1" / "checkpoint.pth")
    written = save_checkpoint(model, tmp_path / "timm.safetensors", format="timm")
    converted = official_state(REFVECTORS / "timm_from_ms_p1" / "checkpoint.pth")
    from safetensors.torch import load_file

    assert_same_tensors(converted, load_file(written))


def test_official_files_are_wrapped_as_the_official_code_writes_them(tmp_path):
    model = load_model(REFVECTORS / "mm1x_p2" / "checkpoint.pth")
    obj = torch.load(save_checkpoint(model, tmp_path / "mm.pth", format="mmaction2"), weights_only=True)
    assert set(obj) == {"meta", "state_dict"} and json.loads(obj["meta"]["config"])["norm_stages"] == [0, 1, 2]
    assert {"backbone.norm0.weight", "backbone.norm3.weight", "cls_head.fc_cls.weight"} <= set(obj["state_dict"])
    with pytest.raises(ValueError, match="'video_swin' layout has no per-stage norms"):
        save_checkpoint(model, tmp_path / "vs.pth", format="video_swin")
    with pytest.raises(ValueError, match="cannot be written in the 'timm' layout"):
        save_checkpoint(model, tmp_path / "timm.pth", format="timm")
    with pytest.raises(ValueError, match="expected a .safetensors path"):
        save_checkpoint(model, tmp_path / "native.pth")


def test_microsoft_export_crops_tables_of_an_unclamped_model(tmp_path):
    """A compat=None model keeps 4x4 tables everywhere; Microsoft's stage 3 (2x2 grid) holds a 3x3 table."""
    model = load_model(REFVECTORS / "ms_swin_p1" / "checkpoint.pth", compat=None)
    assert model.layers[3].blocks[0].attn.table_window == (4, 4)
    written = official_state(save_checkpoint(model, tmp_path / "ms.pth", format="microsoft"))
    original = official_state(REFVECTORS / "ms_swin_p1" / "checkpoint.pth")
    key = "layers.3.blocks.0.attn.relative_position_bias_table"
    assert written[key].shape == (9, 8) and torch.equal(written[key], original[key])
    clamped = load_model(REFVECTORS / "ms_swin_p1" / "checkpoint.pth")  # compat microsoft: 3x3 table in stage 3
    with pytest.raises(ValueError, match=r"cover window \(2, 2\), but the 'torchvision' model .* expects \(4, 4\)"):
        save_checkpoint(clamped, tmp_path / "tv.pth", format="torchvision")
    assert not (tmp_path / "tv.pth").exists()


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_full_size_manifest_architecture_is_inferred(path):
    """Meta tensors of each released checkpoint's keys (indices dropped: the table sizes must do)."""
    manifest = json.loads(path.read_text())
    state = {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
             for k, (shape, dtype) in manifest["keys"].items() if not k.endswith("relative_position_index")}
    with torch.device("meta"):
        info = describe_checkpoint(state)
    assert info.variant == expected_variant(path.stem)
    model = info.model
    assert sum(p.numel() for p in model.parameters()) == manifest.get("num_params_with_head", manifest["num_params"])
    if info.family == "shunted":
        rebuilt = {k: list(v.shape) for k, v in model.state_dict().items()}
    else:
        native = formats.from_native(model.state_dict(), info.format, len(model.layers), model.config.ndim == 3)
        native.update(formats.derived_buffers(model, info.format))
        rebuilt = {k: list(v.shape) for k, v in native.items()}
    assert rebuilt == {k: shape for k, (shape, _dtype) in manifest["keys"].items()}


def test_hub_safetensors_with_foreign_metadata_is_detected(tmp_path):
    """Hugging Face writes {'format': 'pt'} into safetensors metadata: the layout still comes from the keys."""
    from safetensors.torch import save_file

    state = official_state(REFVECTORS / "timm_swin_p1" / "checkpoint.pth")
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt", "config": "{not json"})
    info = inspect_checkpoint(tmp_path / "model.safetensors")
    assert info.format == "timm" and info.report.ok and info.model.config.compat == "timm"
