"""Reading one image or video the way the evaluation pipelines do, keeping the pixels for display."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from swinkit.data.sampling import sample_frames
from swinkit.data.transforms import (CenterCrop, ImageCenterCrop, ImageResizeShortSide, Normalize, PILToTensor,
                                     ResizeShortSide, ToChannelsFirst, default_short_side)
from swinkit.data.video import VIDEO_EXTENSIONS, VideoReader

IMAGE_CROP_PCT = 0.875  # the 256 -> 224 resize-then-crop of the image evaluation transform


@dataclass(frozen=True)
class Media:
    """``frames`` (T, H, W, 3) uint8 as the model sees them (T = 1 for an image); ``tensor`` the normalised
    model input (1, 3, H, W) or (1, 3, T, H, W); ``frame_indices`` the source frames of a video."""

    path: str
    frames: np.ndarray
    tensor: torch.Tensor
    frame_indices: tuple[int, ...] | None

    @property
    def is_video(self) -> bool:
        return self.frame_indices is not None


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def load_image(path: str | os.PathLike, size: int) -> Media:
    """Short side ``size / 0.875`` (bicubic), centre crop ``size``, ImageNet normalisation."""
    rng = np.random.default_rng(0)  # the evaluation transforms draw nothing
    try:
        with Image.open(path) as image:
            image = ImageResizeShortSide(math.floor(size / IMAGE_CROP_PCT))(image.convert("RGB"), rng)
    except UnidentifiedImageError as err:
        raise ValueError(f"{path} is not an image Pillow can read") from err
    pixels = PILToTensor()(ImageCenterCrop(size)(image, rng), rng)  # (H, W, 3) uint8
    tensor = ToChannelsFirst(2)(Normalize()(pixels, rng), rng)
    return Media(str(path), pixels.numpy()[None], tensor[None], None)


def load_video(path: str | os.PathLike, size: int, num_frames: int, frame_interval: int = 1) -> Media:
    """The centre clip of ``num_frames`` frames ``frame_interval`` apart; short side ``size * 256 / 224``,
    centre crop ``size``, ImageNet normalisation (the single-view evaluation transform)."""
    if num_frames < 1 or frame_interval < 1:
        raise ValueError(f"frames and frame interval must be >= 1, got {num_frames} and {frame_interval}")
    rng = np.random.default_rng(0)
    with VideoReader(path) as video:
        indices = sample_frames(video.num_frames, num_frames, frame_interval, 1, test_mode=True)
        clip = torch.from_numpy(video.read(indices))  # (T, H, W, 3) uint8
    pixels = CenterCrop(size)(ResizeShortSide(default_short_side(size))(clip, rng), rng)
    tensor = ToChannelsFirst(3)(Normalize()(pixels, rng), rng)
    return Media(str(path), pixels.numpy(), tensor[None], tuple(int(i) for i in indices))


def load_media(path: str | os.PathLike, video: bool, size: int, num_frames: int = 32,
               frame_interval: int = 2) -> Media:
    """An image for an image model (``video`` False) or a clip for a video model; a mismatch is an error."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such input file: {path}")
    if is_video_file(path) != video:
        wanted = f"a video ({', '.join(VIDEO_EXTENSIONS[:4])}, ...)" if video else "an image"
        raise ValueError(f"this model takes {wanted}; got {path}")
    if video:
        return load_video(path, size, num_frames, frame_interval)
    return load_image(path, size)
