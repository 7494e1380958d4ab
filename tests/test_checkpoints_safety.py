"""Checkpoint files are read safely, and every bad file or misfit gives one clear error, loading nothing."""
import os
import pickle

import pytest
import torch

import swinkit
from swinkit.checkpoints import CheckpointError, LoadReport, load_checkpoint, read_checkpoint, save_checkpoint
from swinkit.checkpoints.io import atomic_write
from refcases import REFVECTORS

MS_CASE = REFVECTORS / "ms_swin_p1" / "checkpoint.pth"
TINY_SHUNTED = dict(embed_dims=(64, 32, 32, 64), num_heads=(2, 2, 2, 4), depths=(1, 1, 1, 1))


def tiny_swin(**overrides):
    return swinkit.create_model("swin_t", **{"embed_dim": 8, "depths": (2, 2, 2, 1), "num_heads": (1, 2, 4, 8),
                                             "window_size": 4, "img_size": 64, "num_classes": 10,
                                             "compat": "microsoft", **overrides})


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), "the model was (partly) loaded"


class RunsCode:
    """Unpickling this calls os.system: what a malicious .pth does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zipped", [True, False], ids=["torch_save", "legacy_pickle"])
def test_pickle_that_runs_code_is_refused(tmp_path, zipped):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    if zipped:
        torch.save({"model": {"patch_embed.proj.weight": torch.zeros(1)}, "x": RunsCode(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"model": RunsCode(marker)}, protocol=2))
    model = tiny_swin()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=r"refused to load .*evil\.pth.*posix\.system.*run arbitrary code"):
        load_checkpoint(model, path)
    assert not marker.exists()
    assert_unchanged(model, before)


@pytest.mark.parametrize("suffix,keep", [(".pth", 0.5), (".pth", 0.02), (".safetensors", 0.5)])
def test_truncated_file_names_the_file(tmp_path, suffix, keep):
    model = tiny_swin()
    good = save_checkpoint(model, tmp_path / f"good{suffix}", format="microsoft" if suffix == ".pth" else "swinkit")
    data = good.read_bytes()
    bad = tmp_path / f"cut{suffix}"
    bad.write_bytes(data[: int(len(data) * keep)])
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=rf"cannot read .*cut\{suffix}"):
        load_checkpoint(model, bad)
    assert_unchanged(model, before)


def test_garbage_and_missing_files(tmp_path):
    garbage = tmp_path / "noise.pth"
    garbage.write_bytes(b"not a checkpoint" * 20)
    with pytest.raises(CheckpointError, match=r"noise\.pth.*corrupt"):
        read_checkpoint(garbage)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        read_checkpoint(tmp_path / "absent.pth")


def test_unknown_format_is_one_clear_error(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 7, 7), "fc.weight": torch.zeros(10, 4)}, path)
    with pytest.raises(CheckpointError, match=r"resnet\.pth: unknown checkpoint layout.*conv1\.weight"):
        load_checkpoint(tiny_swin(), path)
    with pytest.raises(CheckpointError, match="no state dict found"):
        load_checkpoint(tiny_swin(), {"epoch": 3})
    with pytest.raises(CheckpointError, match="unknown checkpoint format 'keras'"):
        load_checkpoint(tiny_swin(), MS_CASE, format="keras")


@pytest.mark.parametrize("case,model_name,message", [
    ("shunted_p2", "swin_t", r"holds a Shunted Transformer checkpoint .* but the model is a 2D Swin"),
    ("ms_swin_p1", "shunted_t", r"holds a 2D Swin checkpoint \(microsoft layout\) but the model is a Shunted"),
    ("vswin0x_p2", "swin_t", r"holds a Video Swin \(3D\) checkpoint .*build a video_swin_\* model instead"),
])
def test_checkpoint_of_the_wrong_family(case, model_name, message):
    import swinkit.models.shunted  # noqa: F401  (registers shunted_*)

    tiny = TINY_SHUNTED if model_name.startswith("shunted") else dict(embed_dim=8, num_heads=(1, 2, 4, 8))
    model = swinkit.create_model(model_name, num_classes=3, **tiny)
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(model, REFVECTORS / case / "checkpoint.pth")
    assert_unchanged(model, before)


def test_wrong_shape_tensor_loads_nothing_and_reports_it():
    state = torch.load(MS_CASE, weights_only=True)["model"]
    state["layers.1.blocks.0.attn.qkv.weight"] = torch.zeros(48, 15)
    model = tiny_swin()
    before = snapshot(model)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, {"model": state})
    text = str(err.value)
    assert "does not fit the model (nothing was loaded)" in text
    assert "layers.1.blocks.0.attn.qkv.weight: checkpoint [48, 15] vs model [48, 16]" in text
    assert_unchanged(model, before)
    report = load_checkpoint(model, {"model": state}, strict=False)  # loads what fits, says what did not
    assert [m[0] for m in report.mismatched] == ["layers.1.blocks.0.attn.qkv.weight"]
    assert not report.ok and len(report.loaded) == 107


def test_missing_and_unexpected_keys_raise_with_the_report():
    state = torch.load(MS_CASE, weights_only=True)["model"]
    del state["layers.0.blocks.0.norm1.weight"]
    state["layers.0.blocks.0.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"(?s)missing: 1  \[layers\.0\.blocks\.0\.norm1\.weight\].*"
                                              r"unexpected: 1  \[layers\.0\.blocks\.0\.extra\.weight\]"):
        load_checkpoint(tiny_swin(), state)


def test_report_is_readable_and_complete():
    report = load_checkpoint(tiny_swin(compat=None), MS_CASE)
    assert isinstance(report, LoadReport) and report.ok
    assert report.source_format == "microsoft" and report.wrapper == "model"
    assert report.compat == "microsoft" and report.compat_set  # compat None -> the source's semantics
    assert len(report.loaded) == 108 and not report.reinitialized
    # Microsoft built stage 3's table for the 2x2 grid; this model has the configured 4x4 one
    assert report.resized == ["layers.3.blocks.0.attn.relative_position_bias_table"]
    assert sorted(report.ignored) == report.ignored and len(report.ignored) == 9  # 7 indices, 2 masks
    text = str(report)
    assert text.splitlines()[0] == "LoadReport: format=microsoft (under 'model')"
    assert "  compat: microsoft (set from the checkpoint)" in text and "  mismatched: 0" in text
    assert "  resized: 1  [layers.3.blocks.0.attn.relative_position_bias_table]" in text
    assert "placed at the centre of window (4, 4)" in text


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.pth"
    target.write_bytes(b"old")

    def failing_write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing_write)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.pth"]
