"""`swinkit visualize`: window geometry, attention maps and Grad-CAM in input coordinates, and their PNGs."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

import swinkit
import swinkit.models.shunted  # noqa: F401  (registers shunted_*)
from swinkit.cli import CLIError
from swinkit.cli import deploy as deploy_cli
from swinkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from swinkit.data.video import write_video
from swinkit.deploy.geometry import attention_groups, stage_geometry, window_token_positions
from swinkit.deploy.media import load_media
from swinkit.deploy.visualize import PANEL_PX, TITLE_PX, attention_map, figure_size, grad_cam, visualize


def tiny_swin(**overrides) -> torch.nn.Module:
    """Input 32x32 -> stage 1 grid 8x8 with window 4 and shift 2; stage 2 grid 4x4."""
    kwargs = dict(embed_dim=8, depths=(2, 2), num_heads=(2, 2), window_size=4, num_classes=4, img_size=None)
    return swinkit.create_model("swin_t", **{**kwargs, **overrides}).eval()


def tiny_video_swin() -> torch.nn.Module:
    """Input 8x32x32 -> stage 1 grid 4x8x8 with window 2x4x4 and shift 1x2x2."""
    return swinkit.create_model("video_swin_t", embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=(2, 4, 4),
                                num_classes=4).eval()


def tiny_shunted() -> torch.nn.Module:
    return swinkit.create_model("shunted_t", embed_dims=(8, 16), depths=(1, 1), num_heads=(2, 2), mlp_ratios=(2, 2),
                                sr_ratios=(4, 1), num_classes=4).eval()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    pixels = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
    pixels[10:25, 15:30] = (250, 20, 20)
    path = tmp_path_factory.mktemp("media") / "picture.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
    frames = np.zeros((12, 36, 40, 3), dtype=np.uint8)
    for t in range(12):  # a square moving to the right
        frames[t, 10:22, 2 + 2 * t:14 + 2 * t] = (240, 240, 40)
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    write_video(path, frames, fps=8)
    return path


def _png_size(path) -> tuple[int, int]:
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


# ----------------------------------------------------------------------------- geometry

def test_shifted_window_regions_of_an_8x8_grid():
    groups = attention_groups((8, 8), (4, 4), (2, 2))
    # after the cyclic shift, rows and columns split at 2 and 6: 3 x 3 regions that attend separately
    bands = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    expected = bands[:, None] * 3 + bands[None, :]
    labels = groups.numpy()
    assert len(np.unique(labels)) == 9
    for a in range(9):  # one-to-one correspondence between found and expected regions
        assert len(np.unique(labels[expected == a])) == 1
    unshifted = attention_groups((8, 8), (4, 4), (0, 0)).numpy()
    assert len(np.unique(unshifted)) == 4 and len(np.unique(unshifted[:4, :4])) == 1


def test_window_positions_mark_padding():
    positions = window_token_positions((5, 6), (4, 4), (0, 0))
    assert positions.shape == (4, 16)
    assert (positions < 0).sum() == 8 * 8 - 5 * 6
    assert sorted(positions[positions >= 0].tolist()) == list(range(30))
    assert positions[0, :4].tolist() == [0, 1, 2, 3] and positions[0, 4] == 6  # row-major inside a window


def test_stage_geometry_follows_merging():
    model = tiny_video_swin()
    first, second = stage_geometry(model, (8, 32, 32), 0), stage_geometry(model, (8, 32, 32), 1)
    assert (first.grid, first.window, first.shift, first.token_size) == ((4, 8, 8), (2, 4, 4), (1, 2, 2), (2, 4, 4))
    assert (second.grid, second.window, second.shift, second.token_size) == ((4, 4, 4), (2, 4, 4), (1, 0, 0), (2, 8, 8))
    with pytest.raises(ValueError, match=r"stage must be in \[1, 2\]"):
        stage_geometry(model, (8, 32, 32), 2)


# ----------------------------------------------------------------------------- maps

def _uniform_attention(model: torch.nn.Module) -> None:
    """q = 0 and no position bias: every token attends uniformly to the tokens of its region."""
    with torch.no_grad():
        for stage in model.layers:
            for block in stage.blocks:
                dim = block.attn.qkv.in_features
                block.attn.qkv.weight[:dim].zero_()
                block.attn.qkv.bias[:dim].zero_()
                block.attn.relative_position_bias_table.zero_()


def test_attention_map_covers_the_query_window_and_region():
    model = tiny_swin()
    _uniform_attention(model)
    x = torch.randn(1, 3, 32, 32)
    plain = attention_map(model, x, stage=0, block=0, head=0, query=(20, 5))
    # W-MSA: the 4x4-token window holding pixel (20, 5) is pixels [16, 32) x [0, 16), weight 1/16 each
    inside = np.zeros((32, 32), dtype=bool)
    inside[16:32, 0:16] = True
    assert torch.allclose(plain.weights[torch.from_numpy(inside)], torch.tensor(1 / 16))
    assert plain.weights[torch.from_numpy(~inside)].abs().max() == 0 and plain.shifted is False
    shifted = attention_map(model, x, stage=0, block=1, head=None, query=(0, 0))
    # SW-MSA: pixel (0, 0) is in the 2x2-token corner region (8x8 pixels) of the wrapped window
    corner = np.zeros((32, 32), dtype=bool)
    corner[:8, :8] = True
    assert torch.allclose(shifted.weights[torch.from_numpy(corner)], torch.tensor(0.25), atol=1e-6)
    assert shifted.weights[torch.from_numpy(~corner)].abs().max() < 1e-30 and shifted.shifted is True


def test_attention_map_is_a_distribution_for_every_family():
    swin = attention_map(tiny_swin(), torch.randn(1, 3, 32, 32), stage=0, head=1)
    assert swin.weights.shape == (32, 32) and abs(float(swin.weights.sum()) / 16 - 1) < 1e-5  # 4x4 px per token
    padded = attention_map(tiny_swin(), torch.randn(1, 3, 36, 36), stage=0, block=0, query=(35, 35))
    assert padded.padding_weight > 0.1  # grid 9x9 padded to 12x12: the corner window is mostly padding
    assert abs(float(padded.weights.sum()) / 16 + padded.padding_weight - 1) < 1e-5
    video = attention_map(tiny_video_swin(), torch.randn(1, 3, 8, 32, 32), stage=0, query=(3, 9, 30))
    assert video.weights.shape == (8, 32, 32) and abs(float(video.weights.sum()) / 32 - 1) < 1e-5  # 2x4x4 per token
    shunted = attention_map(tiny_shunted(), torch.randn(1, 3, 32, 32), stage=0)
    assert shunted.weights.shape == (32, 32) and abs(float(shunted.weights.sum()) / 16 - 1) < 1e-5  # 4x4 per token
    with pytest.raises(ValueError, match="head must be in"):
        attention_map(tiny_swin(), torch.randn(1, 3, 32, 32), stage=0, head=2)
    with pytest.raises(ValueError, match=r"query must be \(y, x\) inside"):
        attention_map(tiny_swin(), torch.randn(1, 3, 32, 32), stage=0, query=(32, 0))


def test_grad_cam_equals_cam_for_a_mean_pool_linear_head():
    model = tiny_swin()
    x = torch.randn(1, 3, 32, 32)
    result = grad_cam(model, x, target_class=2)
    # d logit / d A = fc weight / positions, so Grad-CAM is ReLU(fc_weight . A) up to a positive factor
    with torch.no_grad():
        features = model.forward_features(x)[-1]  # (1, C, 4, 4)
        cam = torch.relu(torch.einsum("c,bchw->bhw", model.head.fc.weight[2], features))[None]
        cam = torch.nn.functional.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(result.cam, cam / cam.max(), rtol=1e-4, atol=1e-5)
    assert result.target_class == 2 and 0 < result.probability < 1
    predicted = grad_cam(model, x)
    assert predicted.target_class == predicted.predicted_class == int(model(x).argmax())
    assert all(p.grad is None for p in model.parameters())  # no gradients left on the model
    video = grad_cam(tiny_video_swin(), torch.randn(1, 3, 8, 32, 32))
    assert video.cam.shape == (8, 32, 32) and float(video.cam.max()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"class must be in \[0, 3\]"):
        grad_cam(model, x, target_class=4)


# ----------------------------------------------------------------------------- media and figures

def test_load_media_matches_the_model_input(image_file, video_file):
    image = load_media(image_file, video=False, size=32)
    assert image.frames.shape == (1, 32, 32, 3) and image.frames.dtype == np.uint8
    expected = (torch.from_numpy(image.frames[0]).float() - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(image.tensor, expected.permute(2, 0, 1)[None])
    video = load_media(video_file, video=True, size=32, num_frames=8, frame_interval=1)
    assert video.frames.shape == (8, 32, 32, 3) and video.tensor.shape == (1, 3, 8, 32, 32)
    assert video.frame_indices == tuple(range(2, 10))  # the centre clip of 12 frames
    with pytest.raises(ValueError, match="takes a video"):
        load_media(image_file, video=True, size=32)
    with pytest.raises(ValueError, match="takes an image"):
        load_media(video_file, video=False, size=32)


def test_figures_for_an_image(image_file, tmp_path):
    media = load_media(image_file, video=False, size=32)
    written = visualize(tiny_swin(), media, tmp_path, stage=0)
    assert set(written) == {"windows", "attention", "cam"}
    for kind, path in written.items():
        assert path == tmp_path / f"picture_{kind}.png"
        assert _png_size(path) == figure_size(2) == (2 * PANEL_PX, PANEL_PX + TITLE_PX)


def test_figures_for_a_video(video_file, tmp_path):
    media = load_media(video_file, video=True, size=32, num_frames=8, frame_interval=1)
    written = visualize(tiny_video_swin(), media, tmp_path, stage=0, block=1, query=(4, 16, 16), max_frames=8)
    assert _png_size(written["windows"]) == figure_size(8, columns=4)  # W-MSA and SW-MSA rows, 4 frames
    assert _png_size(written["attention"]) == figure_size(4)  # 2 tokens of 2 frames in the query's window
    assert _png_size(written["cam"]) == figure_size(8) == (4 * PANEL_PX, 2 * PANEL_PX + TITLE_PX)


def test_figures_for_shunted(image_file, tmp_path):
    media = load_media(image_file, video=False, size=32)
    written = visualize(tiny_shunted(), media, tmp_path, ("attention", "cam"), stage=0)
    assert [_png_size(p) for p in written.values()] == [figure_size(2)] * 2
    with pytest.raises(ValueError, match="window picture applies to Swin"):
        visualize(tiny_shunted(), media, tmp_path, ("windows",))


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    deploy_cli.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_cli_visualize(image_file, tmp_path, capsys):
    checkpoint = tmp_path / "tiny.safetensors"
    swinkit.save_checkpoint(tiny_swin(), checkpoint)
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\nbird\nfish\n")
    args = _cli(["visualize", str(checkpoint), str(image_file), "--out-dir", str(tmp_path / "out"), "--size", "32",
                 "--stage", "1", "--what", "cam,attention", "--class", "1", "--classes", str(classes)])
    assert args.func(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["picture_attention.png", "picture_cam.png"]
    assert "picture_cam.png (cam)" in capsys.readouterr().out

    with pytest.raises(CLIError, match="needs a Swin / Video Swin model"):
        deploy_cli.run_visualize(_cli(["visualize", "shunted_t", str(image_file), "--what", "windows",
                                       "--model-kwargs", "{depths: [1, 1, 1, 1]}"]))
    with pytest.raises(CLIError, match="--query takes frame,y,x"):
        deploy_cli.run_visualize(_cli(["visualize", "video_swin_t", str(image_file), "--query", "1,2",
                                       "--model-kwargs", "{embed_dim: 8, depths: [2], num_heads: [1]}"]))
    with pytest.raises(SystemExit):
        _cli(["visualize", "swin_t", str(image_file), "--what", "windows,heatmap"])
