"""Synthetic datasets for demos and tests, deterministic given a seed.

``make_dataset``: short videos of one bright moving shape on a darker textured, noisy background; the
class is the motion (moving up / down / left / right, growing / shrinking, turning clockwise /
anticlockwise), never the appearance: shapes, colours, sizes, speeds and start positions are random for
every class, and a moving object wraps around the frame edges, so where it is in any one frame says
nothing about the class.

``make_image_dataset``: still images where the class is the shape (circle, square, triangle, cross).

Both write ``<split>/<class>/<split>_<i>.<ext>`` files, the list files ``train.txt``, ``val.txt``,
``test.txt`` (``relative/path label``), ``classes.txt`` and ``synthetic.json`` (the generation settings),
in a temporary folder renamed to ``out_dir`` at the end.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from swinkit.data.video import default_video_codec, write_video

MOTION_CLASSES = ("move_up", "move_down", "move_left", "move_right", "grow", "shrink", "rotate_cw", "rotate_ccw")
# Unchanged by a horizontal flip, so the usual flip augmentation cannot swap labels.
DEFAULT_MOTION_CLASSES = ("move_up", "move_down", "grow", "shrink")
SHAPE_CLASSES = ("circle", "square", "triangle", "cross")
MARKER_FILE = "synthetic.json"
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}

_DIRECTIONS = {"move_up": (0.0, -1.0), "move_down": (0.0, 1.0), "move_left": (-1.0, 0.0), "move_right": (1.0, 0.0)}


# Rendering -------------------------------------------------------------------------------------------------

def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Signed distance in pixels (negative inside) of a shape centred at u = v = 0, pointing along +u."""
    if shape == "circle":
        return np.hypot(u, v) - radius
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8 * radius
    if shape == "triangle":  # circumradius `radius`, one corner along +u
        normals = [np.pi + k * 2 * np.pi / 3 for k in range(3)]
        return np.max([np.cos(a) * u + np.sin(a) * v for a in normals], axis=0) - 0.5 * radius
    if shape == "cross":
        arm = 0.3 * radius
        horizontal = np.maximum(np.abs(u) - radius, np.abs(v) - arm)
        vertical = np.maximum(np.abs(v) - radius, np.abs(u) - arm)
        return np.minimum(horizontal, vertical)
    if shape == "hand":  # a clock hand: a bar from the centre along +u, with a hub
        width = 0.3 * radius
        bar = np.maximum(np.abs(u - radius / 2) - radius / 2, np.abs(v) - width / 2)
        return np.minimum(bar, np.hypot(u, v) - width)
    raise ValueError(f"unknown shape {shape!r}")


def _render(size: int, shape: str, centres: np.ndarray, radii: np.ndarray, angles: np.ndarray,
            colour: np.ndarray, background: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Frames (T, size, size, 3) uint8 of one shape at per-frame centres (T, 2) (x, y; wrapping at the
    edges), radii (T,) and angles (T,) (radians, clockwise on screen), over a background (size, size, 3)
    plus per-frame noise (T, size, size, 3)."""
    pixels = np.arange(size) + 0.5
    # Offset to the nearest copy of the centre on the torus: the shape leaves one edge and enters the other.
    dx = (pixels[None, None, :] - centres[:, 0, None, None] + size / 2) % size - size / 2
    dy = (pixels[None, :, None] - centres[:, 1, None, None] + size / 2) % size - size / 2
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    alpha = np.clip(0.5 - _shape_distance(shape, u, v, radii[:, None, None]), 0.0, 1.0)[..., None]
    frames = background[None] * (1 - alpha) + colour * alpha + noise
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random dark colour with a smooth random texture (sum of sinusoids): (size, size, 3) float."""
    base = rng.uniform(25, 95, size=3)
    y, x = np.mgrid[0:size, 0:size] / size
    texture = np.zeros((size, size))
    for _ in range(3):
        fx, fy = rng.integers(-4, 5, size=2)
        texture += rng.uniform(4, 9) * np.sin(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi))
    tint = rng.uniform(0.5, 1.0, size=3)
    return base + texture[..., None] * tint


def _object_colour(rng: np.random.Generator) -> np.ndarray:
    """A random bright colour. Objects are always brighter than the background: with a random contrast
    sign, a small Video Swin trained from scratch on a few hundred clips learns far more slowly."""
    return rng.uniform(165, 255, size=3)


def render_motion_clip(motion: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of ``motion`` (one of ``MOTION_CLASSES``): (frames, size, size, 3) uint8."""
    if motion not in MOTION_CLASSES:
        raise ValueError(f"unknown motion class {motion!r}; choose from {MOTION_CLASSES}")
    scale = size / 32  # speeds and sizes are defined for 32x32 frames
    t = np.arange(frames, dtype=np.float64)
    start = rng.uniform(0, size, size=2)
    angle0 = rng.uniform(0, 2 * np.pi)
    if motion in _DIRECTIONS:
        shape = SHAPE_CLASSES[rng.integers(len(SHAPE_CLASSES))]
        direction = np.array(_DIRECTIONS[motion])
        speed = rng.uniform(1.0, 2.0) * scale  # pixels per frame
        drift = rng.uniform(-0.2, 0.2) * speed * direction[::-1]  # a little sideways motion
        velocity = speed * direction + drift
        radii = np.full(frames, rng.uniform(0.14, 0.22) * size)
        angles = angle0 + np.radians(rng.uniform(-3, 3)) * t
    else:
        velocity = rng.uniform(0, 0.4) * scale * np.array([np.cos(angle0), np.sin(angle0)])  # slow drift
        if motion in ("grow", "shrink"):
            shape = SHAPE_CLASSES[rng.integers(len(SHAPE_CLASSES))]
            small, large = rng.uniform(0.08, 0.13) * size, rng.uniform(0.32, 0.40) * size
            first, last = (small, large) if motion == "grow" else (large, small)
            radii = first + (last - first) * t / max(frames - 1, 1)
            angles = angle0 + np.radians(rng.uniform(-3, 3)) * t
        else:
            shape = "hand"
            radii = np.full(frames, rng.uniform(0.30, 0.40) * size)
            turn = np.radians(rng.uniform(12, 22)) * (1 if motion == "rotate_cw" else -1)
            angles = angle0 + turn * t
    centres = start[None, :] + t[:, None] * velocity[None, :]
    background = _background(size, rng)
    colour = _object_colour(rng)
    noise = rng.normal(0, 6, size=(frames, size, size, 3))
    return _render(size, shape, centres, radii, angles, colour, background, noise)


def render_shape_image(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of ``shape`` (one of ``SHAPE_CLASSES``) at a random place, size, angle, colour: (size, size, 3)
    uint8."""
    if shape not in SHAPE_CLASSES:
        raise ValueError(f"unknown shape class {shape!r}; choose from {SHAPE_CLASSES}")
    radius = rng.uniform(0.22, 0.38) * size
    centre = rng.uniform(radius, size - radius, size=(1, 2))
    background = _background(size, rng)
    colour = _object_colour(rng)
    noise = rng.normal(0, 6, size=(1, size, size, 3))
    return _render(size, shape, centre, np.array([radius]), rng.uniform(0, 2 * np.pi, size=1), colour,
                   background, noise)[0]


# Writing datasets ------------------------------------------------------------------------------------------

def _balanced_labels(count: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` labels, each class ``count // num_classes`` or one more times, in random order."""
    return rng.permutation(np.arange(count) % num_classes)


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ValueError(f"{out_dir} is not empty; pass overwrite=True (--overwrite) to replace a "
                             f"dataset made by make-dataset")
        if not (out_dir / MARKER_FILE).is_file():
            raise ValueError(f"{out_dir} is not empty and has no {MARKER_FILE}: it was not made by "
                             f"make-dataset, so it is not replaced")


def _write_dataset(out_dir: str | os.PathLike, classes: Sequence[str], counts: dict[str, int], seed: int,
                   extension: str, write_sample: Callable[[Path, str, np.random.Generator], None],
                   settings: dict, overwrite: bool) -> dict:
    """Shared layout of both generators; ``write_sample(path, class_name, rng)`` writes one file."""
    out_dir = Path(out_dir)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list of distinct names, got {list(classes)}")
    for split, count in counts.items():
        if count < 0 or (split == "train" and count < 1):
            raise ValueError(f"num_{split} must be >= {1 if split == 'train' else 0}, got {count}")
    _check_out_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    started = time.perf_counter()
    try:
        for split, count in counts.items():
            labels = _balanced_labels(count, len(classes), np.random.default_rng((seed, SPLIT_IDS[split])))
            lines = []
            for index, label in enumerate(labels):
                relative = Path(split, classes[label], f"{split}_{index:05d}{extension}")
                (tmp_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                write_sample(tmp_dir / relative, classes[label],
                             np.random.default_rng((seed, SPLIT_IDS[split], index)))
                lines.append(f"{relative.as_posix()} {label}\n")
            (tmp_dir / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
        (tmp_dir / "classes.txt").write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")
        summary = {**settings, "classes": list(classes), "counts": dict(counts), "seed": seed}
        (tmp_dir / MARKER_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def make_dataset(out_dir: str | os.PathLike, num_train: int = 320, num_val: int = 80, num_test: int = 80,
                 frames: int = 16, size: int = 32, seed: int = 0,
                 classes: Sequence[str] = DEFAULT_MOTION_CLASSES, fps: int = 16, codec: str | None = None,
                 overwrite: bool = False) -> dict:
    """Write a synthetic action-recognition dataset of .mp4 clips (frames x size x size) to ``out_dir``.

    ``classes`` are names from ``MOTION_CLASSES`` (labels in that order); the default four are unchanged
    by horizontal flips. Classes with left/right or clockwise/anticlockwise need training without flip.
    Labels are balanced per split. ``codec`` defaults to libx264 (mpeg4 where FFmpeg lacks it).
    Returns the settings written to ``synthetic.json`` plus ``seconds`` taken.
    """
    unknown = [name for name in classes if name not in MOTION_CLASSES]
    if unknown:
        raise ValueError(f"unknown motion classes {unknown}; choose from {MOTION_CLASSES}")
    if frames < 2:
        raise ValueError(f"a motion needs at least 2 frames, got frames={frames}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16 (yuv420p video), got {size}")
    codec = codec or default_video_codec()

    def write_sample(path: Path, motion: str, rng: np.random.Generator) -> None:
        write_video(path, render_motion_clip(motion, frames, size, rng), fps=fps, codec=codec)

    settings = {"kind": "video", "frames": frames, "size": size, "fps": fps, "codec": codec,
                "flip_safe": all(name in DEFAULT_MOTION_CLASSES for name in classes)}
    counts = {"train": num_train, "val": num_val, "test": num_test}
    return _write_dataset(out_dir, classes, counts, seed, ".mp4", write_sample, settings, overwrite)


def make_image_dataset(out_dir: str | os.PathLike, num_train: int = 400, num_val: int = 80, num_test: int = 80,
                       size: int = 32, seed: int = 0, classes: Sequence[str] = SHAPE_CLASSES,
                       overwrite: bool = False) -> dict:
    """Write a synthetic image-classification dataset of .png images (size x size) to ``out_dir``; the class
    is the shape (names from ``SHAPE_CLASSES``). Returns the settings written to ``synthetic.json``."""
    unknown = [name for name in classes if name not in SHAPE_CLASSES]
    if unknown:
        raise ValueError(f"unknown shape classes {unknown}; choose from {SHAPE_CLASSES}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")

    def write_sample(path: Path, shape: str, rng: np.random.Generator) -> None:
        Image.fromarray(render_shape_image(shape, size, rng)).save(path)

    settings = {"kind": "image", "size": size, "flip_safe": True}
    counts = {"train": num_train, "val": num_val, "test": num_test}
    return _write_dataset(out_dir, classes, counts, seed, ".png", write_sample, settings, overwrite)
