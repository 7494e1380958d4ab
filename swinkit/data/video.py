"""Video files with PyAV (FFmpeg ships inside the ``av`` wheel): frame counts, decoding, writing.

Frames are (T, H, W, 3) uint8 RGB numpy arrays.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ogv", ".ts")


class DecodeTimeout(TimeoutError):
    """Decoding a file took longer than its deadline."""


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise ValueError(f"{path} has no video stream")
    return container.streams.video[0]


class VideoReader:
    """An open video file. ``num_frames`` and ``read(indices)`` -> (N, H, W, 3) uint8; use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._container = av.open(self.path)
        try:
            self._stream = _video_stream(self._container, self.path)
        except ValueError:
            self._container.close()
            raise
        self._num_frames: int | None = None
        self._used = False
        # One reformatter keeps its conversion context across frames: 3x faster than frame.to_ndarray(format=...).
        self._to_rgb = VideoReformatter()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    @property
    def num_frames(self) -> int:
        """Number of frames: the container's count, or (when it reports none) the number of video packets."""
        if self._num_frames is None:
            reported = self._stream.frames
            self._num_frames = reported if reported > 0 else count_packets(self.path)
            if self._num_frames < 1:
                raise ValueError(f"{self.path} has no video frames")
        return self._num_frames

    def _rewind(self) -> None:
        self._container.close()
        self._container = av.open(self.path)
        self._stream = _video_stream(self._container, self.path)

    def _decode(self, wanted: set[int], deadline: float | None) -> tuple[dict[int, np.ndarray], int]:
        """Decode from the start up to max(wanted); returns {index: frame} and how many frames were decoded."""
        if self._used:
            self._rewind()
        self._used = True
        last = max(wanted)
        kept = {}  # decoded frames are converted after the loop: converting inside it is 2-3x slower
        count = 0
        for frame in self._container.decode(self._stream):
            if count in wanted:
                kept[count] = frame
            count += 1
            if count > last:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise DecodeTimeout(f"decoding {self.path} passed its deadline after {count} frames")
        frames = {i: self._to_rgb.reformat(f, format="rgb24").to_ndarray() for i, f in kept.items()}
        return frames, count

    def read(self, frame_indices, deadline: float | None = None) -> np.ndarray:
        """Frames at ``frame_indices`` (any order, repeats allowed) -> (N, H, W, 3) uint8.

        Decodes sequentially from the first frame (exact frames, no seeking). When the file holds fewer
        frames than it reported, indices past the end wrap around, as in mmaction2's decoders.
        ``deadline`` is a ``time.monotonic()`` value; passing it raises ``DecodeTimeout``.
        """
        indices = [int(i) for i in np.asarray(frame_indices).reshape(-1)]
        if not indices or min(indices) < 0:
            raise ValueError(f"frame indices must be a non-empty list of non-negative ints, got {indices}")
        frames, count = self._decode(set(indices), deadline)
        if count == 0:
            raise ValueError(f"{self.path}: no frame could be decoded")
        missing = {i % count for i in indices if i not in frames} - frames.keys()
        if missing:
            wrapped, _ = self._decode(missing, deadline)
            frames.update(wrapped)
        return np.stack([frames[i] if i in frames else frames[i % count] for i in indices])


def count_packets(path: str | os.PathLike) -> int:
    """Number of non-empty video packets (one per frame for common codecs), without decoding."""
    with av.open(str(path)) as container:
        stream = _video_stream(container, str(path))
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def read_frames(path: str | os.PathLike, frame_indices, deadline: float | None = None) -> np.ndarray:
    """Frames at ``frame_indices`` of the video at ``path`` -> (N, H, W, 3) uint8 (see ``VideoReader.read``)."""
    with VideoReader(path) as video:
        return video.read(frame_indices, deadline)


def default_video_codec() -> str:
    """``libx264`` when this FFmpeg build can encode H.264, else ``mpeg4``."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except ValueError:  # av.codec.codec.UnknownCodecError
        return "mpeg4"


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 16, codec: str | None = None,
                crf: int = 17) -> str:
    """Write (T, H, W, 3) uint8 RGB frames as a yuv420p video, atomically; returns the codec used.

    ``codec`` defaults to ``default_video_codec()``. H and W must be even (yuv420p halves chroma).
    libx264 runs single-threaded so that the same frames give the same file.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"write_video expects (T, H, W, 3) uint8 frames with T >= 1, "
                         f"got {frames.dtype} array of shape {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p video needs even height and width, got {height}x{width}")
    codec = codec or default_video_codec()
    path = Path(path)
    tmp_path = path.with_name(f".{path.stem}.tmp{path.suffix}")  # same suffix: FFmpeg picks the muxer by it
    try:
        with av.open(str(tmp_path), "w") as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = 1
            if codec == "libx264":
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            else:
                stream.codec_context.bit_rate = max(200_000, 40 * width * height * fps)
            for image in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return codec
