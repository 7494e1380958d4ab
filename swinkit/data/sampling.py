"""Frame sampling: which frame indices of a video make up the clip(s) a model sees.

Pure functions of the frame count and a ``numpy.random.Generator``. They follow mmaction2 1.x exactly
(``SampleFrames`` with ``out_of_bound_opt='loop'``, ``twice_sample=False``, ``keep_tail_frames=False``,
no temporal jitter, no ``target_fps``; and ``UniformSample``); only the random stream differs, because
mmaction2 draws from numpy's and Python's global generators.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLING_METHODS = ("clips", "uniform")


def _check_counts(num_frames: int, clip_len: int, frame_interval: int, num_clips: int) -> None:
    if num_frames < 1:
        raise ValueError(f"a video needs at least 1 frame to sample from, got num_frames={num_frames}")
    if clip_len < 1 or frame_interval < 1 or num_clips < 1:
        raise ValueError(f"clip_len, frame_interval and num_clips must be >= 1, got clip_len={clip_len}, "
                         f"frame_interval={frame_interval}, num_clips={num_clips}")


def _train_clip_offsets(num_frames: int, span: int, num_clips: int, rng: np.random.Generator) -> np.ndarray:
    """First frame of each training clip (mmaction2 ``SampleFrames._get_train_clips``)."""
    avg_interval = (num_frames - span + 1) // num_clips
    if avg_interval > 0:
        # One random start inside each of num_clips equal segments.
        return np.arange(num_clips) * avg_interval + rng.integers(avg_interval, size=num_clips)
    if num_frames > max(num_clips, span):
        return np.sort(rng.integers(num_frames - span + 1, size=num_clips))
    if avg_interval == 0:
        ratio = (num_frames - span + 1.0) / num_clips
        return np.around(np.arange(num_clips) * ratio)
    return np.zeros(num_clips, dtype=np.int64)


def _test_clip_offsets(num_frames: int, clip_len: int, frame_interval: int, num_clips: int) -> np.ndarray:
    """First frame of each test clip (mmaction2 ``SampleFrames._get_test_clips``)."""
    if clip_len == 1:  # mmaction2's "2D recognizer" rule: the middle of num_clips equal segments
        avg_interval = num_frames / num_clips
        return np.arange(num_clips) * avg_interval + avg_interval / 2.0
    span = (clip_len - 1) * frame_interval + 1
    max_offset = max(num_frames - span, 0)
    if num_clips > 1:
        # Evenly spaced from the first possible start to the last one, both included.
        return np.round(np.arange(num_clips) * (max_offset / (num_clips - 1)))
    return np.array([max_offset // 2])


def sample_frames(num_frames: int, clip_len: int, frame_interval: int = 1, num_clips: int = 1, *,
                  test_mode: bool = False, rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame indices of ``num_clips`` clips of ``clip_len`` frames taken every ``frame_interval`` frames.

    Training (``test_mode=False``, needs ``rng``): one random start inside each of ``num_clips`` equal
    segments. Test: starts evenly spaced over the video (one clip: centred). Indices past the end wrap
    around (short videos loop). Returns int64 array (num_clips * clip_len,), clip-major.
    """
    _check_counts(num_frames, clip_len, frame_interval, num_clips)
    if test_mode:
        offsets = _test_clip_offsets(num_frames, clip_len, frame_interval, num_clips)
    else:
        if rng is None:
            raise ValueError("training-mode frame sampling is random: pass rng=np.random.Generator")
        offsets = _train_clip_offsets(num_frames, clip_len * frame_interval, num_clips, rng)
    indices = offsets[:, None] + np.arange(clip_len)[None, :] * frame_interval
    # mmaction2 wraps (possibly fractional) indices first and truncates to int afterwards.
    return np.mod(indices, num_frames).astype(np.int64).reshape(-1)


def uniform_sample(num_frames: int, clip_len: int, num_clips: int = 1, *, test_mode: bool = False,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """One frame from each of ``clip_len`` equal segments of the video (SSv2 / mmaction2 ``UniformSample``).

    Training (needs ``rng``, ``num_clips`` must be 1): a random frame of each segment, ends included.
    Test: clip k of ``num_clips`` takes the frame at fraction (k + 1) / (num_clips + 1) of each segment
    (one clip: the middle). Short videos repeat frames instead of looping. Returns int64 array
    (num_clips * clip_len,), clip-major.
    """
    _check_counts(num_frames, clip_len, 1, num_clips)
    seg_size = (num_frames - 1) / clip_len
    starts = np.array([int(np.round(seg_size * i)) for i in range(clip_len)])
    if not test_mode:
        if rng is None:
            raise ValueError("training-mode frame sampling is random: pass rng=np.random.Generator")
        if num_clips != 1:
            raise ValueError(f"uniform sampling draws one clip in training, got num_clips={num_clips}")
        ends = np.array([int(np.round(seg_size * (i + 1))) for i in range(clip_len)])
        return rng.integers(starts, ends + 1).astype(np.int64)
    duration = seg_size / (num_clips + 1)
    clips = [starts + int(duration * (k + 1)) for k in range(num_clips)]
    return np.concatenate(clips).astype(np.int64)


@dataclass(frozen=True)
class FrameSampler:
    """Picks the frames of a video: ``sampler(num_frames, rng)`` -> int64 (num_clips * clip_len,).

    ``method`` is ``"clips"`` (``sample_frames``: Kinetics-style, uses ``frame_interval``) or
    ``"uniform"`` (``uniform_sample``: SSv2-style, one frame per segment, ignores ``frame_interval``).
    """

    clip_len: int
    frame_interval: int = 1
    num_clips: int = 1
    test_mode: bool = False
    method: str = "clips"

    def __post_init__(self):
        if self.method not in SAMPLING_METHODS:
            raise ValueError(f"sampling method must be one of {SAMPLING_METHODS}, got {self.method!r}")
        _check_counts(1, self.clip_len, self.frame_interval, self.num_clips)
        if self.method == "uniform" and not self.test_mode and self.num_clips != 1:
            raise ValueError(f"uniform sampling draws one clip in training, got num_clips={self.num_clips}")

    def __call__(self, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.method == "uniform":
            return uniform_sample(num_frames, self.clip_len, self.num_clips, test_mode=self.test_mode, rng=rng)
        return sample_frames(num_frames, self.clip_len, self.frame_interval, self.num_clips,
                             test_mode=self.test_mode, rng=rng)
