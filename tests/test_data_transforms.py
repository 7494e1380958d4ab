"""Transforms: shapes, which pixels crops take, normalisation numbers, view order, reproducibility."""
import numpy as np
import pytest
import torch
from PIL import Image

from swinkit.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, CenterCrop, Compose, Flip, ImageCenterCrop,
                                     ImageResizeShortSide, Normalize, RandomResizedCrop, ResizeShortSide,
                                     SplitViews, ThreeCrop, ToChannelsFirst, image_eval_transform,
                                     image_train_transform, random_resized_crop_box, resize, short_side_size,
                                     video_eval_transform, video_multiview_transform, video_train_transform)

RNG = np.random.default_rng(0)


def position_clip(frames: int, height: int, width: int) -> torch.Tensor:
    """(T, H, W, 3) uint8: channel 0 = frame, 1 = row, 2 = column."""
    t, h, w = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([t, h, w], dim=-1).to(torch.uint8)


def test_compose_applies_in_order():
    pipeline = Compose([lambda x, rng: x + 1, lambda x, rng: x * 10])
    assert pipeline(2, RNG) == 30


def test_resize_is_bilinear_half_pixel():
    row = torch.tensor([0, 100], dtype=torch.uint8).reshape(1, 2, 1)  # (H=1, W=2, C=1)
    # output centres map to x = -0.25, 0.25, 0.75, 1.25 -> clamped edges, 25, 75
    assert resize(row, 1, 4).reshape(-1).tolist() == [0, 25, 75, 100]


def test_resize_short_side_keeps_ratio_rounding_half_up():
    assert short_side_size(7, 10, 4) == (4, 6)  # 10 * 4 / 7 = 5.71 -> 6
    assert short_side_size(256, 340, 128) == (128, 170)
    clip = torch.full((2, 20, 30, 3), 77, dtype=torch.uint8)
    out = ResizeShortSide(10)(clip, RNG)
    assert out.shape == (2, 10, 15, 3) and out.dtype == torch.uint8 and bool((out == 77).all())


def test_center_crop_takes_the_middle_rounding_down():
    clip = position_clip(2, 5, 8)
    out = CenterCrop(3)(clip, RNG)
    # top = (5 - 3) // 2 = 1, left = (8 - 3) // 2 = 2
    assert out[..., 1].unique().tolist() == [1, 2, 3]
    assert out[..., 2].unique().tolist() == [2, 3, 4]
    assert torch.equal(out, clip[:, 1:4, 2:5])
    with pytest.raises(ValueError, match="at least 6x6"):
        CenterCrop(6)(clip, RNG)


@pytest.mark.parametrize("height, width, axis, starts", [
    (4, 10, 2, [0, 6, 3]),  # wide: step (10 - 4) // 2 = 3; order left, right, middle
    (9, 4, 1, [0, 4, 2]),  # tall: step 2; order top, bottom, middle
])
def test_three_crop_offsets_and_order(height, width, axis, starts):
    out = ThreeCrop(4)(position_clip(2, height, width), RNG)
    assert out.shape == (3, 2, 4, 4, 3)
    assert [int(crop[0, 0, 0, axis]) for crop in out] == starts


def test_three_crop_needs_short_side_equal_to_size():
    with pytest.raises(ValueError, match="shorter side"):
        ThreeCrop(4)(position_clip(1, 6, 8), RNG)


def test_flip_reverses_width():
    clip = position_clip(2, 3, 5)
    assert torch.equal(Flip(1.0)(clip, RNG), clip.flip(2))
    assert Flip(1.0)(clip, RNG)[0, 0, :, 2].tolist() == [4, 3, 2, 1, 0]
    assert torch.equal(Flip(0.0)(clip, RNG), clip)


def test_normalize_numbers():
    pixel = torch.tensor([[255, 0, 104]], dtype=torch.uint8)  # (1, C)
    out = Normalize()(pixel, RNG)
    expected = [(255 - 123.675) / 58.395, (0 - 116.28) / 57.12, (104 - 103.53) / 57.375]
    assert out.dtype == torch.float32
    assert out[0].tolist() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="channel"):
        Normalize()(torch.zeros(2, 4, dtype=torch.uint8), RNG)


def test_to_channels_first_moves_channel_axis():
    clip = position_clip(2, 3, 4)
    out = ToChannelsFirst(3)(clip, RNG)
    assert out.shape == (3, 2, 3, 4)
    assert int(out[2, 1, 2, 3]) == int(clip[1, 2, 3, 2]) == 3
    assert ToChannelsFirst(2)(clip[0], RNG).shape == (3, 3, 4)


def test_random_resized_crop_box_within_bounds_and_ranges():
    for seed in range(200):
        top, left, crop_h, crop_w = random_resized_crop_box(60, 80, np.random.default_rng(seed))
        assert 0 <= top and top + crop_h <= 60 and 0 <= left and left + crop_w <= 80
        assert 0.08 * 4800 * 0.9 <= crop_h * crop_w <= 4800
    first = random_resized_crop_box(60, 80, np.random.default_rng(5))
    assert first == random_resized_crop_box(60, 80, np.random.default_rng(5))


def test_random_resized_crop_box_falls_back_to_central_square():
    # full area at aspect 1/2 (10 wide, 20 high) never fits: after 10 attempts, the centred min(H, W) square
    assert random_resized_crop_box(10, 20, RNG, (1.0, 1.0), (0.5, 0.5)) == (0, 5, 10, 10)


def test_random_resized_crop_output_size():
    out = RandomResizedCrop(8)(position_clip(3, 30, 40), np.random.default_rng(1))
    assert out.shape == (3, 8, 8, 3) and out.dtype == torch.uint8
    assert out[:, 0, 0, 0].tolist() == [0, 1, 2]  # one box for every frame


def test_video_train_transform_shape_and_reproducibility():
    clip = torch.randint(0, 256, (4, 24, 32, 3), dtype=torch.uint8)
    transform = video_train_transform(size=16)
    out = transform(clip, np.random.default_rng(3))
    assert out.shape == (3, 4, 16, 16) and out.dtype == torch.float32
    assert torch.equal(out, transform(clip, np.random.default_rng(3)))
    assert not torch.equal(out, transform(clip, np.random.default_rng(4)))


def test_video_eval_transform_constant_mean_clip_is_zero():
    clip = torch.tensor(IMAGENET_MEAN).round().to(torch.uint8).expand(2, 20, 30, 3).contiguous()
    out = video_eval_transform(size=16)(clip, RNG)
    assert out.shape == (3, 2, 16, 16)
    expected = (torch.tensor(IMAGENET_MEAN).round() - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[:, 0, 0, 0], expected)


def test_multiview_transform_is_clip_major():
    num_clips, clip_len = 2, 3
    clip = position_clip(num_clips * clip_len, 4, 10)
    identity = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    views = video_multiview_transform(num_clips, 3, size=4, **identity)(clip, RNG)
    assert views.shape == (6, 3, clip_len, 4, 4)  # (V, C, T, H, W)
    for view in range(6):
        clip_index, crop_index = divmod(view, 3)
        frames = views[view, 0, :, 0, 0].tolist()
        assert frames == [clip_index * clip_len + t for t in range(clip_len)]
        assert views[view, 2, 0, 0, 0].item() == [0, 6, 3][crop_index]  # left, right, middle
    single = video_multiview_transform(num_clips, 1, size=4, short_side=4, **identity)(clip, RNG)
    assert single.shape == (2, 3, clip_len, 4, 4)
    assert single[1, 0, :, 0, 0].tolist() == [3, 4, 5]


def test_split_views_rejects_wrong_layout():
    with pytest.raises(ValueError, match="SplitViews"):
        SplitViews(num_clips=4, num_crops=3)(torch.zeros(3, 6, 2, 2, 3), RNG)


def test_image_resize_short_side_and_center_crop_follow_torchvision():
    image = Image.new("RGB", (20, 10))  # (W, H)
    assert ImageResizeShortSide(8)(image, RNG).size == (16, 8)
    array = np.arange(7 * 9, dtype=np.uint8).reshape(7, 9)
    cropped = ImageCenterCrop(4)(Image.fromarray(array), RNG)
    # top = round(1.5) = 2, left = round(2.5) = 2 (Python rounds half to even, as torchvision)
    assert np.array_equal(np.array(cropped), array[2:6, 2:6])


def test_image_eval_transform_resizes_by_crop_pct():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    out = image_eval_transform(size=16, crop_pct=0.5)(image, RNG)  # short side 32, crop 16
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    resized = image.resize((48, 32), Image.Resampling.BICUBIC)
    expected = np.array(resized)[8:24, 16:32].astype(np.float32)
    expected = (expected - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(out.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="crop_pct"):
        image_eval_transform(crop_pct=1.5)


def test_image_train_transform_shape_and_reproducibility():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    transform = image_train_transform(size=24)
    out = transform(image, np.random.default_rng(9))
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    assert torch.equal(out, transform(image, np.random.default_rng(9)))
