"""Transforms: small callables ``t(x, rng) -> x`` chained by ``Compose``.

Video clips travel as channels-last uint8 tensors (..., H, W, C), e.g. (T, H, W, C), until ``Normalize``
makes them float32 and ``ToChannelsFirst`` gives the model layout (C, T, H, W). Images start as PIL
images (resized with Pillow, bicubic), become (H, W, C) uint8 tensors with ``PILToTensor`` and end as
(C, H, W) float32. Every random choice comes from the ``numpy.random.Generator`` passed in, so a seed
fixes the result. Spatial rules follow mmaction2 for videos and timm / torchvision for images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# ImageNet statistics on the 0-255 scale (= (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) on 0-1).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

Transform = Callable[[Any, np.random.Generator], Any]


class Compose:
    """Apply ``transforms`` in order: ``Compose([a, b])(x, rng) == b(a(x, rng), rng)``."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, x, rng: np.random.Generator):
        for transform in self.transforms:
            x = transform(x, rng)
        return x

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


def _check_channels_last(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} expects a channels-last tensor (..., H, W, C), got {shape}")


def resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of (..., H, W, C) uint8 to (..., height, width, C) uint8 (like OpenCV INTER_LINEAR)."""
    _check_channels_last(x, "resize")
    if x.shape[-3:-1] == (height, width):
        return x
    lead, (in_h, in_w, channels) = x.shape[:-3], x.shape[-3:]
    planes = x.reshape(-1, in_h, in_w, channels).permute(0, 3, 1, 2).float()
    out = F.interpolate(planes, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    # Bilinear weights are convex, so the rounded result stays within 0-255: no clamp needed.
    out = out.round_().to(torch.uint8).permute(0, 2, 3, 1)
    return out.reshape(*lead, height, width, channels).contiguous()


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(new_height, new_width) with the shorter side = ``short_side``, the other scaled and rounded half up."""
    scale = short_side / min(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            area_range: tuple[float, float] = (0.08, 1.0),
                            aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
                            max_attempts: int = 10) -> tuple[int, int, int, int]:
    """A random crop (top, left, crop_h, crop_w) covering a fraction of the area in ``area_range`` with
    width / height in ``aspect_ratio_range`` (log-uniform); after ``max_attempts`` misses, the central
    square. Same rule as mmaction2 ``RandomResizedCrop.get_crop_bbox``.
    """
    if not 0 < area_range[0] <= area_range[1] <= 1:
        raise ValueError(f"area_range must satisfy 0 < low <= high <= 1, got {area_range}")
    if not 0 < aspect_ratio_range[0] <= aspect_ratio_range[1]:
        raise ValueError(f"aspect_ratio_range must satisfy 0 < low <= high, got {aspect_ratio_range}")
    log_ratios = np.log(aspect_ratio_range)
    aspect_ratios = np.exp(rng.uniform(log_ratios[0], log_ratios[1], size=max_attempts))
    target_areas = rng.uniform(area_range[0], area_range[1], size=max_attempts) * height * width
    crop_ws = np.round(np.sqrt(target_areas * aspect_ratios)).astype(np.int64)
    crop_hs = np.round(np.sqrt(target_areas / aspect_ratios)).astype(np.int64)
    for crop_h, crop_w in zip(crop_hs, crop_ws):
        if 0 < crop_h <= height and 0 < crop_w <= width:
            left = int(rng.integers(0, width - crop_w + 1))
            top = int(rng.integers(0, height - crop_h + 1))
            return top, left, int(crop_h), int(crop_w)
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


@dataclass(frozen=True)
class ResizeShortSide:
    """(..., H, W, C) uint8 -> shorter side ``size``, aspect ratio kept (bilinear)."""

    size: int

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        _check_channels_last(x, "ResizeShortSide")
        return resize(x, *short_side_size(x.shape[-3], x.shape[-2], self.size))


@dataclass(frozen=True)
class RandomResizedCrop:
    """(..., H, W, C) uint8 -> a random crop (``random_resized_crop_box``) resized to (size, size).

    One box for all frames of a clip (mmaction2 ``RandomResizedCrop`` then ``Resize((size, size))``).
    """

    size: int
    area_range: tuple[float, float] = (0.08, 1.0)
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        _check_channels_last(x, "RandomResizedCrop")
        top, left, crop_h, crop_w = random_resized_crop_box(x.shape[-3], x.shape[-2], rng, self.area_range,
                                                            self.aspect_ratio_range)
        return resize(x[..., top:top + crop_h, left:left + crop_w, :], self.size, self.size)


def _check_crop(x: torch.Tensor, size: int, name: str) -> tuple[int, int]:
    _check_channels_last(x, name)
    height, width = x.shape[-3], x.shape[-2]
    if size > height or size > width:
        raise ValueError(f"{name}({size}) needs frames at least {size}x{size}, got {height}x{width}")
    return height, width


@dataclass(frozen=True)
class CenterCrop:
    """(..., H, W, C) -> (..., size, size, C) from the centre (offsets rounded down, as mmaction2)."""

    size: int

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        height, width = _check_crop(x, self.size, "CenterCrop")
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return x[..., top:top + self.size, left:left + self.size, :]


@dataclass(frozen=True)
class ThreeCrop:
    """(..., H, W, C) -> (3, ..., size, size, C): three crops spread along the longer side.

    The shorter side must already equal ``size``. Crop order as mmaction2 ``ThreeCrop``: left (top),
    right (bottom), middle.
    """

    size: int

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        height, width = _check_crop(x, self.size, "ThreeCrop")
        if height == self.size:
            step = (width - self.size) // 2
            crops = [x[..., :, left:left + self.size, :] for left in (0, 2 * step, step)]
        elif width == self.size:
            step = (height - self.size) // 2
            crops = [x[..., top:top + self.size, :, :] for top in (0, 2 * step, step)]
        else:
            raise ValueError(f"ThreeCrop({self.size}) needs the shorter side resized to {self.size} first, "
                             f"got {height}x{width}")
        return torch.stack(crops)


@dataclass(frozen=True)
class Flip:
    """Reverse the W axis of (..., H, W, C) with probability ``p`` (one draw for the whole clip)."""

    p: float = 0.5

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        _check_channels_last(x, "Flip")
        return x.flip(-2) if rng.random() < self.p else x


@dataclass(frozen=True)
class Normalize:
    """(..., C) uint8 -> float32 ``(x - mean) / std``, mean and std per channel on the 0-255 scale."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if x.shape[-1] != len(self.mean):
            raise ValueError(f"Normalize has {len(self.mean)} channel means, got a tensor of shape "
                             f"{tuple(x.shape)} (channels last)")
        mean = torch.tensor(self.mean, dtype=torch.float32)
        std = torch.tensor(self.std, dtype=torch.float32)
        return (x.float() - mean) / std


@dataclass(frozen=True)
class SplitViews:
    """Multi-view test layout: (K, N * T, H, W, C) crops of N clips -> (N * K, T, H, W, C), clip-major.

    View v is clip v // K, crop v % K. With ``num_crops == 1`` the input may lack the crop axis.
    """

    num_clips: int
    num_crops: int = 1

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.num_crops == 1 and x.ndim == 4:
            x = x.unsqueeze(0)
        if x.ndim != 5 or x.shape[0] != self.num_crops or x.shape[1] % self.num_clips:
            raise ValueError(f"SplitViews expects ({self.num_crops}, {self.num_clips} * T, H, W, C), "
                             f"got {tuple(x.shape)}")
        clip_len = x.shape[1] // self.num_clips
        views = x.reshape(self.num_crops, self.num_clips, clip_len, *x.shape[2:]).transpose(0, 1)
        return views.reshape(self.num_clips * self.num_crops, clip_len, *x.shape[2:])


@dataclass(frozen=True)
class ToChannelsFirst:
    """Move the channel axis before the ``spatial_dims`` last axes: (..., T, H, W, C) -> (..., C, T, H, W)
    for videos (3), (..., H, W, C) -> (..., C, H, W) for images (2). Returns a contiguous tensor."""

    spatial_dims: int = 3

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if x.ndim < self.spatial_dims + 1:
            raise ValueError(f"ToChannelsFirst({self.spatial_dims}) needs at least {self.spatial_dims + 1} "
                             f"axes, got {tuple(x.shape)}")
        return x.movedim(-1, -(self.spatial_dims + 1)).contiguous()


# Images (PIL) ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageRandomResizedCrop:
    """PIL image -> random crop (``random_resized_crop_box``) resized to (size, size), bicubic."""

    size: int
    area_range: tuple[float, float] = (0.08, 1.0)
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        top, left, crop_h, crop_w = random_resized_crop_box(image.height, image.width, rng, self.area_range,
                                                            self.aspect_ratio_range)
        box = (left, top, left + crop_w, top + crop_h)
        return image.resize((self.size, self.size), Image.Resampling.BICUBIC, box=box)


@dataclass(frozen=True)
class ImageResizeShortSide:
    """PIL image -> shorter side ``size``, longer side ``int(size * long / short)`` (torchvision), bicubic."""

    size: int

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        width, height = image.size
        if width <= height:
            new_size = (self.size, int(self.size * height / width))
        else:
            new_size = (int(self.size * width / height), self.size)
        return image.resize(new_size, Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class ImageCenterCrop:
    """PIL image -> central (size, size) crop, offsets ``round((side - size) / 2)`` as torchvision."""

    size: int

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        width, height = image.size
        if self.size > width or self.size > height:
            raise ValueError(f"ImageCenterCrop({self.size}) needs an image at least {self.size}x{self.size}, "
                             f"got {height}x{width}")
        top, left = int(round((height - self.size) / 2.0)), int(round((width - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))


@dataclass(frozen=True)
class PILToTensor:
    """PIL image -> (H, W, 3) uint8 tensor (RGB)."""

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8))


# Ready-made pipelines --------------------------------------------------------------------------------------

def default_short_side(size: int) -> int:
    """Short side to resize to before cropping ``size`` (the 256 -> 224 ratio of the Kinetics recipes)."""
    return round(size * 256 / 224)


def video_train_transform(size: int = 224, short_side: int | None = None, flip: bool = True,
                          area_range: tuple[float, float] = (0.08, 1.0),
                          aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
                          mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Compose:
    """(T, H, W, C) uint8 -> (C, T, size, size) float32: short side ``short_side`` (default
    ``default_short_side(size)``), random resized crop, flip (p=0.5, if ``flip``), normalise."""
    steps = [ResizeShortSide(short_side or default_short_side(size)),
             RandomResizedCrop(size, tuple(area_range), tuple(aspect_ratio_range))]
    if flip:
        steps.append(Flip(0.5))
    return Compose(steps + [Normalize(tuple(mean), tuple(std)), ToChannelsFirst(3)])


def video_eval_transform(size: int = 224, short_side: int | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                         std: Sequence[float] = IMAGENET_STD) -> Compose:
    """One view, (T, H, W, C) uint8 -> (C, T, size, size) float32: short side ``short_side`` (default
    ``default_short_side(size)``), centre crop, normalise."""
    return Compose([ResizeShortSide(short_side or default_short_side(size)), CenterCrop(size),
                    Normalize(tuple(mean), tuple(std)), ToChannelsFirst(3)])


def video_multiview_transform(num_clips: int, num_crops: int = 1, size: int = 224, short_side: int | None = None,
                              mean: Sequence[float] = IMAGENET_MEAN,
                              std: Sequence[float] = IMAGENET_STD) -> Compose:
    """Test views, (num_clips * T, H, W, C) uint8 -> (V, C, T, size, size) float32, V = num_clips * num_crops,
    clip-major (view v = clip v // num_crops, crop v % num_crops).

    ``num_crops`` 1: short side ``short_side`` (default ``default_short_side(size)``) and a centre crop;
    3: short side ``size`` and ``ThreeCrop`` (mmaction2's Kinetics test recipe; ``short_side`` unused).
    """
    if num_crops == 1:
        steps = [ResizeShortSide(short_side or default_short_side(size)), CenterCrop(size)]
    elif num_crops == 3:
        steps = [ResizeShortSide(size), ThreeCrop(size)]
    else:
        raise ValueError(f"num_crops must be 1 (centre crop) or 3 (three crops), got {num_crops}")
    return Compose(steps + [Normalize(tuple(mean), tuple(std)), SplitViews(num_clips, num_crops),
                            ToChannelsFirst(3)])


def image_train_transform(size: int = 224, flip: bool = True, area_range: tuple[float, float] = (0.08, 1.0),
                          aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
                          mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Compose:
    """PIL image -> (C, size, size) float32: random resized crop (bicubic), flip (p=0.5, if ``flip``), normalise."""
    steps = [ImageRandomResizedCrop(size, tuple(area_range), tuple(aspect_ratio_range)), PILToTensor()]
    if flip:
        steps.append(Flip(0.5))
    return Compose(steps + [Normalize(tuple(mean), tuple(std)), ToChannelsFirst(2)])


def image_eval_transform(size: int = 224, crop_pct: float = 0.875, mean: Sequence[float] = IMAGENET_MEAN,
                         std: Sequence[float] = IMAGENET_STD) -> Compose:
    """PIL image -> (C, size, size) float32: short side ``floor(size / crop_pct)`` (bicubic), centre crop
    ``size``, normalise (timm's eval transform; crop_pct 0.875 = the 256 -> 224 of Microsoft Swin)."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return Compose([ImageResizeShortSide(math.floor(size / crop_pct)), ImageCenterCrop(size), PILToTensor(),
                    Normalize(tuple(mean), tuple(std)), ToChannelsFirst(2)])
