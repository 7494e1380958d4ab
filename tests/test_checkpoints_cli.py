"""``swinkit convert / inflate / inspect`` on the reference checkpoints."""
import re

import pytest
import torch

from swinkit import cli
from swinkit.checkpoints import formats, load_model
from refcases import REFVECTORS


@pytest.fixture
def run(monkeypatch, capsys):
    """Run the swinkit command line with only this command group; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("checkpoints",))

    def invoke(*argv: str):
        code = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return invoke


def test_convert_to_an_official_layout_and_back(run, tmp_path):
    source = REFVECTORS / "vswin0x_p2" / "checkpoint.pth"
    code, out, err = run("convert", source, tmp_path / "tv.pth", "--to", "torchvision")
    assert code == 0 and "(video_swin, custom video_swin" in out and "-> " in out and not err
    tv = torch.load(tmp_path / "tv.pth", weights_only=True)
    assert formats.detect_format(tv) == "torchvision" and "features.0.0.attn.relative_position_index" in tv
    code, out, _ = run("convert", tmp_path / "tv.pth", tmp_path / "back.pth", "--to", "video_swin")
    original = formats.unwrap(torch.load(source, weights_only=True))[0]
    back = torch.load(tmp_path / "back.pth", weights_only=True)["state_dict"]
    assert code == 0 and set(back) == set(original) and all(torch.equal(back[k], v) for k, v in original.items())


def test_convert_shunted_with_an_override(run, tmp_path):
    source = REFVECTORS / "shunted_p2" / "checkpoint.pth"
    code, _, err = run("convert", source, tmp_path / "s.safetensors", "--to", "swinkit")
    assert code == 1 and "pass num_heads" in err
    code, out, _ = run("convert", source, tmp_path / "s.safetensors", "--to", "swinkit", "--set", "num_heads=[2,2,2,4]")
    assert code == 0 and load_model(tmp_path / "s.safetensors").config.num_heads == (2, 2, 2, 4)


def test_inspect_prints_format_architecture_parameters_and_report(run):
    code, out, _ = run("inspect", REFVECTORS / "ms_swin_p1" / "checkpoint.pth")
    assert code == 0
    assert "format: microsoft (state dict under 'model')" in out
    assert '"window_size": [4, 4]' in out and '"img_size": [64, 64]' in out and '"compat": "microsoft"' in out
    model = load_model(REFVECTORS / "ms_swin_p1" / "checkpoint.pth")
    assert f"parameters: {sum(p.numel() for p in model.parameters()):,}" in out
    assert "LoadReport: format=microsoft" in out and "missing: 0" in out


def test_inflate_writes_the_official_inflation(run, tmp_path):
    case = REFVECTORS / "inflate_p2"
    out_path = tmp_path / "video.safetensors"
    code, out, _ = run("inflate", case / "checkpoint2d.pth", out_path, "--window", "4,7,7")
    assert code == 0 and "window (4, 7, 7)" in out
    model = load_model(out_path)
    assert model.family == "video_swin" and model.num_classes == 0
    expected = torch.load(case / "inflated_0x.pth", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    code, _, _ = run("inflate", case / "checkpoint2d.pth", tmp_path / "centre.pth", "--window", "4,7,7",
                     "--mode", "center", "--to", "video_swin")
    centre = torch.load(tmp_path / "centre.pth", weights_only=True)["state_dict"]["backbone.patch_embed.proj.weight"]
    delta = torch.load(case / "inflated_center_derived_delta.pth", weights_only=True)["patch_embed.proj.weight"]
    assert code == 0 and torch.equal(centre, delta)


@pytest.mark.parametrize("argv,message", [
    (("inflate", "shunted_p1", "x.safetensors"), "holds a shunted checkpoint; inflate reads 2D Swin"),
    (("inflate", "inflate_p1", "x.safetensors", "--model", "video_swin_b"), "has embed_dim=8.*which video_swin_b"),
    (("inflate", "inflate_p1", "x.safetensors", "--model", "swin_t"), "is not a video model"),
    (("inflate", "inflate_p1", "x.pth", "--to", "swinkit"), "give OUT a .safetensors name"),
    (("convert", "ms_swin_p1", "x.pth", "--to", "mmaction2"), "cannot be written in the 'mmaction2' layout"),
    (("convert", "ms_swin_p1", "x.pth", "--to", "caffe"), "invalid choice: 'caffe'"),
    (("inspect", "absent"), "checkpoint file not found"),
])
def test_errors_are_one_line(run, tmp_path, argv, message):
    files = {"shunted_p1": REFVECTORS / "shunted_p1" / "checkpoint.pth",
             "inflate_p1": REFVECTORS / "inflate_p1" / "checkpoint2d.pth",
             "ms_swin_p1": REFVECTORS / "ms_swin_p1" / "checkpoint.pth", "absent": tmp_path / "absent.pth"}
    argv = [files.get(a, tmp_path / a if a.endswith((".pth", ".safetensors")) else a) for a in argv]
    code, _, err = run(*argv)
    assert code in (1, 2)
    last = err.strip().splitlines()[-1]
    assert last.startswith("swinkit: error:") and re.search(message, last), last
    assert not list(tmp_path.glob("x.*"))
