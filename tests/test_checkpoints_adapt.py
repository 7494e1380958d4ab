"""Adaptation on load: tables for another window, patch kernels, input channels, classifiers, windows read back."""
import pytest
import torch
import torch.nn.functional as F

import swinkit
from swinkit.checkpoints import CheckpointError, load_checkpoint, load_model, save_checkpoint
from swinkit.checkpoints import adapt
from swinkit.checkpoints.infer import infer_window, window_candidates
from swinkit.layers.windows import relative_position_index
from refcases import REFVECTORS, load_io

MS_W7 = REFVECTORS / "inflate_p1" / "checkpoint2d.pth"  # Microsoft 2D, window 7, img 224, embed 8
MS_P1 = REFVECTORS / "ms_swin_p1"


def official_bicubic(table: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """What Microsoft's and Video Swin's loaders do with a square (L, nH) table."""
    side = int(table.shape[0] ** 0.5)
    out = F.interpolate(table.permute(1, 0).view(1, table.shape[1], side, side), size=size, mode="bicubic")
    return out.view(table.shape[1], size[0] * size[1]).permute(1, 0)


def test_window_change_7_to_12_resizes_tables_bicubically():
    state = torch.load(MS_W7, weights_only=True)["model"]
    model = load_model(MS_W7, window_size=12)
    assert model.config.window_size == (12, 12) and model.config.compat == "microsoft"
    tables = model.state_dict()
    for key in ("layers.0.blocks.1.attn.relative_position_bias_table",
                "layers.2.blocks.0.attn.relative_position_bias_table"):
        assert tables[key].shape == (23 * 23, state[key].shape[1])
        torch.testing.assert_close(tables[key], official_bicubic(state[key], (23, 23)), rtol=0, atol=0)
    # stage 3 is 7x7 at 224: Microsoft clamps window 12 to 7, so its table keeps its 13x13 size and values
    last = "layers.3.blocks.0.attn.relative_position_bias_table"
    assert torch.equal(tables[last], state[last])


def test_resize_rel_pos_table_2d_and_3d():
    table = torch.randn(13 * 13, 3, dtype=torch.float64)
    same = adapt.resize_rel_pos_table(table, (7, 7), (7, 7))
    assert same is table
    torch.testing.assert_close(adapt.resize_rel_pos_table(table, (7, 7), (12, 12)), official_bicubic(table, (23, 23)))
    table3d = torch.randn(15 * 13 * 13, 2, dtype=torch.float64)
    spatial = adapt.resize_rel_pos_table(table3d, (8, 7, 7), (8, 12, 12))
    assert spatial.shape == (15 * 23 * 23, 2)
    per_offset = table3d.view(15, 169, 2)
    for d in (0, 7, 14):  # every temporal offset is resized on its own
        torch.testing.assert_close(spatial.view(15, 529, 2)[d], official_bicubic(per_offset[d], (23, 23)))
    constant_in_time = per_offset[:1].repeat(15, 1, 1).reshape(-1, 2)
    longer = adapt.resize_rel_pos_table(constant_in_time, (8, 7, 7), (16, 7, 7))  # linear over time
    torch.testing.assert_close(longer.view(31, 169, 2), per_offset[:1].expand(31, 169, 2))
    with pytest.raises(ValueError, match="has 169 rows"):
        adapt.resize_rel_pos_table(torch.zeros(100, 1), (7, 7), (12, 12))


def test_crop_and_embed_tables_keep_the_offsets_a_small_window_reads():
    table = torch.randn(13 * 13, 2)
    small = adapt.crop_rel_pos_table(table, (7, 7), (3, 3))
    big_index = relative_position_index((3, 3), (7, 7))  # geometric offsets of a 3x3 window in a 7x7 table
    assert torch.equal(small[relative_position_index((3, 3))], table[big_index])
    embedded = adapt.embed_rel_pos_table(small, (3, 3), (7, 7))
    assert embedded.shape == table.shape and torch.equal(embedded[big_index], small[relative_position_index((3, 3))])


def test_clamped_microsoft_table_loads_exactly_into_an_unclamped_model():
    """compat=None tables have the configured 4x4 size; the checkpoint's stage 3 was clamped to 2x2."""
    model = swinkit.create_model("swin_t", embed_dim=8, depths=(2, 2, 2, 1), num_heads=(1, 2, 4, 8), window_size=4,
                                 img_size=64, num_classes=10).eval()
    report = load_checkpoint(model, MS_P1 / "checkpoint.pth")
    assert report.compat == "microsoft"
    io = load_io(MS_P1)
    with torch.no_grad():
        logits = model(io["input"])
    torch.testing.assert_close(logits, io["outputs"]["logits"], rtol=1e-5, atol=1e-5)


def test_inflate_patch_kernel_modes():
    weight = torch.randn(8, 3, 4, 4)
    inflated = adapt.inflate_patch_kernel(weight, 2, "inflate")
    assert inflated.shape == (8, 3, 2, 4, 4) and torch.equal(inflated[:, :, 1], weight / 2)
    centre = adapt.inflate_patch_kernel(weight, 3, "center")
    assert torch.equal(centre[:, :, 1], weight) and not centre[:, :, 0].any() and not centre[:, :, 2].any()
    static_clip = torch.randn(1, 3, 1, 4, 4).repeat(1, 1, 3, 1, 1)  # the same frame three times
    for mode in ("inflate", "center"):  # both give a static clip the 2D response
        out = F.conv3d(static_clip, adapt.inflate_patch_kernel(weight, 3, mode), stride=(3, 4, 4))
        torch.testing.assert_close(out[:, :, 0], F.conv2d(static_clip[:, :, 0], weight, stride=4))
    with pytest.raises(ValueError, match="inflation mode"):
        adapt.inflate_patch_kernel(weight, 2, "middle")


def test_inflate_rel_pos_table_tiles_over_temporal_offsets():
    table = torch.randn(7 * 7, 2)  # 2D window 4
    inflated = adapt.inflate_rel_pos_table(table, (4, 4), (4, 7, 7))
    assert inflated.shape == (7 * 169, 2)
    for d in range(7):
        assert torch.equal(inflated[d * 169:(d + 1) * 169], official_bicubic(table, (13, 13)))


def test_resample_patch_kernel_keeps_the_response_of_resized_patches():
    torch.manual_seed(0)
    weight = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    assert torch.equal(adapt.resample_patch_kernel(weight, (4, 4)), weight)
    bigger = adapt.resample_patch_kernel(weight, (8, 8))
    patch = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    upsampled = F.interpolate(patch, size=(8, 8), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(F.conv2d(upsampled, bigger), F.conv2d(patch, weight))
    video = torch.randn(5, 3, 2, 4, 4)
    longer = adapt.resample_patch_kernel(video, (4, 4, 4))
    torch.testing.assert_close(longer.sum(2), video.sum(2))  # a static clip gives the same response


def test_adapt_in_chans():
    weight = torch.randn(4, 3, 2, 2)
    grey = adapt.adapt_in_chans(weight, 1)
    torch.testing.assert_close(grey[:, 0], weight.sum(1))
    six = adapt.adapt_in_chans(weight, 6)
    torch.testing.assert_close(six, torch.cat([weight, weight], 1) * 0.5)
    image = torch.randn(1, 3, 2, 2)
    torch.testing.assert_close(F.conv2d(torch.cat([image, image], 1), six), F.conv2d(image, weight))


def test_patch_and_channel_changes_through_load():
    model = load_model(MS_P1 / "checkpoint.pth", patch_size=2, in_chans=1, img_size=32)
    kernel = torch.load(MS_P1 / "checkpoint.pth", weights_only=True)["model"]["patch_embed.proj.weight"]
    expected = adapt.resample_patch_kernel(kernel.sum(1, keepdim=True), (2, 2))
    assert torch.equal(model.patch_embed.proj.weight.detach(), expected)
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_absolute_pos_embed_resized_with_the_image():
    case = REFVECTORS / "ms_swin_p2" / "checkpoint.pth"  # ape, img 112, patch 2 -> 56x56 grid
    pos = torch.load(case, weights_only=True)["model"]["absolute_pos_embed"]
    model = load_model(case, img_size=96)
    expected = adapt.resize_abs_pos_embed(pos, (56, 56), (48, 48))
    assert expected.shape == (1, 48 * 48, 8) and torch.equal(model.absolute_pos_embed.detach(), expected)


@pytest.mark.parametrize("num_classes", [0, 4])
def test_classifier_dropped_or_reinitialised(num_classes):
    model = swinkit.create_model("swin_t", embed_dim=8, depths=(2, 2, 2, 1), num_heads=(1, 2, 4, 8), window_size=4,
                                 img_size=64, num_classes=num_classes, compat="microsoft")
    fresh = model.head.fc.weight.detach().clone() if num_classes else None
    report = load_checkpoint(model, MS_P1 / "checkpoint.pth")  # 10 classes
    assert report.ok
    if num_classes == 0:
        assert {"head.fc.weight", "head.fc.bias"} <= set(report.ignored) and not report.reinitialized
        assert "classifier dropped" in str(report)
    else:
        assert report.reinitialized == ["head.fc.weight", "head.fc.bias"]
        assert torch.equal(model.head.fc.weight, fresh)
        assert "the checkpoint has 10 classes, the model 4" in str(report)


def test_class_subset_keeps_chosen_rows():
    head = torch.load(MS_P1 / "checkpoint.pth", weights_only=True)["model"]["head.weight"]
    model = load_model(MS_P1 / "checkpoint.pth", num_classes=3, class_subset=[7, 0, 2])
    assert torch.equal(model.head.fc.weight.detach(), head[[7, 0, 2]])
    with pytest.raises(CheckpointError, match="class_subset has 2 classes but the model has 3"):
        load_model(MS_P1 / "checkpoint.pth", num_classes=3, class_subset=[1, 2])
    with pytest.raises(CheckpointError, match=r"indices must be in \[0, 10\)"):
        load_model(MS_P1 / "checkpoint.pth", num_classes=2, class_subset=[1, 10])


def test_headless_checkpoint_reinitialises_the_classifier(tmp_path):
    backbone = load_model(MS_P1 / "checkpoint.pth", num_classes=0)
    path = save_checkpoint(backbone, tmp_path / "backbone.safetensors")
    report = load_checkpoint(swinkit.create_model("swin_t", embed_dim=8, depths=(2, 2, 2, 1), num_heads=(1, 2, 4, 8),
                                                  window_size=4, img_size=64, num_classes=5, compat="microsoft"), path)
    assert report.ok and report.reinitialized == ["head.fc.weight", "head.fc.bias"]


@pytest.mark.parametrize("window", [(7, 7), (12, 12), (4, 7), (8, 7, 7), (16, 7, 7), (2, 5, 5), (4, 3, 3)])
def test_window_read_back_from_the_index(window):
    rows = 1
    for w in window:
        rows *= 2 * w - 1
    assert window in window_candidates(rows, len(window))
    assert infer_window(rows, len(window), index=relative_position_index(window)) == window
    flat = relative_position_index(window).flatten()  # torchvision 2D stores it flattened
    assert infer_window(rows, len(window), index=flat) == window


def test_window_from_table_size_alone_prefers_square_and_like():
    assert infer_window(169, 2) == (7, 7)
    assert infer_window(15 * 169, 3) == (8, 7, 7)
    assert infer_window(31 * 169, 3) == (16, 7, 7)
    assert infer_window(5 * 7, 2, like=(3, 4)) == (3, 4) and infer_window(5 * 7, 2, like=(4, 3)) == (4, 3)
    with pytest.raises(ValueError, match="has a relative position table of 168 rows"):
        infer_window(168, 2)


def test_shunted_stem_takes_other_input_channels_and_heads():
    case = REFVECTORS / "shunted_p2" / "checkpoint.pth"
    state = torch.load(case, weights_only=True)["model"]
    model = load_model(case, num_heads=(2, 2, 2, 4), in_chans=2, num_classes=0)
    stem = state["patch_embed1.conv.0.weight"]
    assert torch.equal(model.patch_embed1.conv[0].weight.detach(), torch.cat([stem, stem], 1)[:, :2] * 1.5)
    assert model(torch.randn(1, 2, 64, 64)).shape == (1, 64)
