"""Datasets of video clips or images, from an mmaction2-style list file or a folder per class.

An item is a dict ``{"inputs": Tensor | None, "label": int, "index": int, "path": str, "error": str | None}``.
A file that cannot be read (corrupt, truncated, a decode past its timeout) gives ``inputs=None`` and the
error message instead of ending the epoch; ``collate`` drops such items and reports them in ``skipped``.
Problems with the dataset itself (no samples, files missing from a list, bad list lines) raise at
construction, before any training starts.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from swinkit.data.sampling import FrameSampler
from swinkit.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, image_eval_transform, image_train_transform,
                                     video_eval_transform, video_multiview_transform, video_train_transform)
from swinkit.data.video import VIDEO_EXTENSIONS, VideoReader

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
KINDS = ("video", "image")

Sample = tuple[str, int]  # (absolute file path, label)


# Finding samples ------------------------------------------------------------------------------------------

def read_list_file(list_file: str | os.PathLike, root: str | os.PathLike) -> list[Sample]:
    """Parse an mmaction2 list file: one ``relative/path label`` per line, paths relative to ``root``.

    Blank lines and lines starting with ``#`` are skipped; paths may contain spaces (the label is the last
    field). Raises ``ValueError`` naming the line for anything else.
    """
    samples = []
    with open(list_file, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{list_file}:{line_number}: expected 'relative/path label' with an integer "
                                 f"label >= 0, got {text!r}")
            samples.append((os.path.join(root, parts[0]), int(parts[1])))
    return samples


def read_classes_file(path: str | os.PathLike) -> list[str]:
    """Class names, one per line (line i = label i); blank lines skipped."""
    with open(path, encoding="utf-8") as lines:
        return [line.strip() for line in lines if line.strip()]


def _extensions(kind: str | None) -> tuple[str, ...]:
    return {"video": VIDEO_EXTENSIONS, "image": IMAGE_EXTENSIONS, None: VIDEO_EXTENSIONS + IMAGE_EXTENSIONS}[kind]


def scan_class_folders(root: str | os.PathLike, kind: str | None = None,
                       classes: Sequence[str] | None = None) -> tuple[list[Sample], list[str]]:
    """Samples from ``root/<class name>/**/<file>``: label = index of the folder name in ``classes``
    (default: the sorted sub-folder names). Only files with a ``kind`` extension count (both kinds when
    None). Returns (samples sorted by class then path, class names)."""
    root = Path(root)
    folders = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    class_names = list(classes) if classes is not None else folders
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise ValueError(f"{root} has class folders {unknown} that are not in the given classes {class_names}")
    extensions = _extensions(kind)
    samples = []
    for label, name in enumerate(class_names):
        folder = root / name
        if folder.is_dir():
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in extensions and p.is_file())
            samples.extend((str(p), label) for p in files)
    return samples, class_names


def infer_kind(paths: Sequence[str]) -> str:
    """``"video"`` or ``"image"`` from the file extensions; ``ValueError`` if mixed or unknown."""
    kinds = {"video" if Path(p).suffix.lower() in VIDEO_EXTENSIONS else
             "image" if Path(p).suffix.lower() in IMAGE_EXTENSIONS else Path(p).suffix for p in paths}
    if len(kinds) != 1 or not kinds <= set(KINDS):
        raise ValueError(f"cannot tell whether the dataset holds videos or images (file types {sorted(kinds)}); "
                         f"pass kind='video' or kind='image'")
    return kinds.pop()


def check_samples(samples: Sequence[Sample], classes: Sequence[str], source: str) -> None:
    """Raise before training if there are no samples, labels outside ``classes`` or files that do not exist."""
    if not samples:
        raise ValueError(f"no samples found in {source}")
    bad_labels = sorted({label for _, label in samples if not 0 <= label < len(classes)})
    if bad_labels:
        raise ValueError(f"{source}: labels {bad_labels[:10]} are outside the {len(classes)} classes")
    missing = [path for path, _ in samples if not os.path.isfile(path)]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise FileNotFoundError(f"{source}: {len(missing)} of {len(samples)} listed files do not exist: {shown}")


# Datasets -------------------------------------------------------------------------------------------------

class _DeadlineWorker:
    """Runs calls on one reusable daemon thread and stops waiting for a call after a timeout.

    A stuck FFmpeg call cannot be interrupted from Python: on a timeout the thread is left to finish
    (decoders also check their deadline between frames) and the owner starts a new worker. A worker
    belongs to the process that made it (a forked DataLoader worker makes its own).
    """

    def __init__(self):
        self.pid = os.getpid()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, daemon=True, name="swinkit-read").start()

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:  # abandoned after a timeout
                return
            function, reply = request
            try:
                reply.put((True, function()))
            except BaseException as err:  # handed to the caller
                reply.put((False, err))

    def run(self, function: Callable, timeout: float):
        """``function()``, or ``TimeoutError`` if it has not returned after ``timeout`` seconds."""
        reply: queue.SimpleQueue = queue.SimpleQueue()
        self._requests.put((function, reply))
        try:
            ok, value = reply.get(timeout=timeout)
        except queue.Empty:
            self._requests.put(None)  # the thread exits once the stuck call returns
            raise TimeoutError(f"reading the file took longer than {timeout:g} s") from None
        if not ok:
            raise value
        return value


class MediaDataset(torch.utils.data.Dataset):
    """Base class: (path, label) samples, a ``transform(x, rng)`` and per-item reproducible randomness.

    The random generator of item ``i`` is seeded with (``seed``, ``epoch``, ``i``), so a seed and an epoch
    fix every augmentation whatever the worker or order; call ``set_epoch`` before each epoch's iterator.
    """

    kind = ""

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], transform: Callable, *,
                 seed: int = 0, timeout: float | None = 60.0, source: str = "the dataset"):
        check_samples(samples, classes, source)
        self.samples = [(str(path), int(label)) for path, label in samples]
        self.classes = list(classes)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.timeout = timeout
        self._reader: _DeadlineWorker | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}  # threads do not travel to worker processes

    def _read(self, path: str, rng: np.random.Generator):
        """``load`` within ``timeout`` seconds."""
        if self.timeout is None:
            return self.load(path, rng, None)
        deadline = time.monotonic() + self.timeout
        if self._reader is None or self._reader.pid != os.getpid():
            self._reader = _DeadlineWorker()
        try:
            return self._reader.run(lambda: self.load(path, rng, deadline), self.timeout)
        except TimeoutError:
            self._reader = None  # still busy with the stuck call: the next item gets a fresh thread
            raise

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (takes effect in workers started afterwards)."""
        self.epoch = int(epoch)

    def load(self, path: str, rng: np.random.Generator, deadline: float | None):
        """Read one file into what ``transform`` takes (overridden per kind)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        try:
            raw = self._read(path, rng)
        except Exception as err:  # any failure to read this one file: report it, keep the epoch going
            return {"inputs": None, "label": label, "index": index, "path": path,
                    "error": f"{type(err).__name__}: {err}"}
        return {"inputs": self.transform(raw, rng), "label": label, "index": index, "path": path, "error": None}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} samples, {len(self.classes)} classes, "
                f"transform={self.transform!r})")


class VideoDataset(MediaDataset):
    """Video clips: ``sampler`` picks frame indices, PyAV decodes them to (N, H, W, 3) uint8, ``transform``
    makes the model input ((C, T, H, W), or (V, C, T, H, W) for multi-view testing)."""

    kind = "video"

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], sampler: FrameSampler,
                 transform: Callable, **kwargs):
        super().__init__(samples, classes, transform, **kwargs)
        self.sampler = sampler

    def load(self, path: str, rng: np.random.Generator, deadline: float | None) -> torch.Tensor:
        with VideoReader(path) as video:
            indices = self.sampler(video.num_frames, rng)
            return torch.from_numpy(video.read(indices, deadline))


class ImageDataset(MediaDataset):
    """Images: Pillow opens them as RGB, ``transform`` makes the model input (C, H, W)."""

    kind = "image"

    def load(self, path: str, rng: np.random.Generator, deadline: float | None) -> Image.Image:
        with Image.open(path) as image:
            return image.convert("RGB")


def worker_context(num_workers: int):
    """The start method for ``num_workers`` DataLoader worker processes: ``forkserver`` where the
    platform has it, else the platform default (None also for ``num_workers == 0``).

    A plain fork copies the parent's locks but not its threads (the decode-timeout reader, PyAV's,
    tqdm's, the intra-op pool): a lock held by one of them at fork time stays held in the worker for
    good, and the epoch hangs. Workers forked from the forkserver, a fresh single-threaded process that
    has imported ``swinkit.data`` once, start from a clean state and still start fast.
    """
    if num_workers == 0 or "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["swinkit.data"])
    return context


def collate(batch: Sequence[dict]) -> dict:
    """Batch dataset items, dropping unreadable ones.

    Returns ``inputs`` (stacked (B, ...) tensor, or None when every item failed), ``labels`` (LongTensor
    (B,)), ``paths`` (list[str]), ``indices`` (LongTensor (B,)) and ``skipped``: (path, error) per dropped item.
    """
    good = [item for item in batch if item["error"] is None and item["inputs"] is not None]
    skipped = [(item["path"], item["error"] or "no inputs") for item in batch
               if item["error"] is not None or item["inputs"] is None]
    return {
        "inputs": torch.stack([item["inputs"] for item in good]) if good else None,
        "labels": torch.tensor([item["label"] for item in good], dtype=torch.long),
        "paths": [item["path"] for item in good],
        "indices": torch.tensor([item["index"] for item in good], dtype=torch.long),
        "skipped": skipped,
    }


def make_loader(dataset, batch_size: int, num_workers: int = 0, collate_fn: Callable = collate,
                **options) -> torch.utils.data.DataLoader:
    """A DataLoader over dataset items, batched by ``collate_fn``, its workers started as
    :func:`worker_context` says; ``options`` go to the DataLoader (sampler, shuffle, drop_last, ...)."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn,
                                       multiprocessing_context=worker_context(num_workers), **options)


# build_dataset --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoOptions:
    """Options of video datasets (``build_dataset(..., **options)``).

    clip_len: frames per clip. frame_interval: step between sampled frames (``sampling="clips"``).
    sampling: ``"clips"`` (mmaction2 SampleFrames, Kinetics) or ``"uniform"`` (one frame per segment, SSv2).
    size: crop size fed to the model. short_side: resize before cropping (default round(size * 256 / 224)).
    flip: random horizontal flip in training (turn off when left/right matters, e.g. SSv2 or the synthetic
    motion dataset). area_range, aspect_ratio_range: random resized crop. mean, std: 0-255 scale.
    test_clips, test_crops: views of the ``"test"`` split (crops 1 = centre, 3 = mmaction2 ThreeCrop on
    short side ``size``); val and train use one clip and one crop.
    """

    clip_len: int = 16
    frame_interval: int = 1
    sampling: str = "clips"
    size: int = 224
    short_side: int | None = None
    flip: bool = True
    area_range: tuple[float, float] = (0.08, 1.0)
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    test_clips: int = 1
    test_crops: int = 1

    def __post_init__(self):
        if self.size < 1 or (self.short_side is not None and self.short_side < self.size):
            raise ValueError(f"need 1 <= size <= short_side (frames are resized to short_side, then cropped "
                             f"to size), got size={self.size}, short_side={self.short_side}")
        if self.test_crops not in (1, 3):
            raise ValueError(f"test_crops must be 1 (centre crop) or 3 (three crops), got {self.test_crops}")


@dataclass(frozen=True)
class ImageOptions:
    """Options of image datasets (``build_dataset(..., **options)``).

    size: crop size fed to the model. crop_pct: eval resizes the short side to floor(size / crop_pct) then
    centre-crops ``size``. flip: random horizontal flip in training. area_range, aspect_ratio_range: random
    resized crop. mean, std: 0-255 scale.
    """

    size: int = 224
    crop_pct: float = 0.875
    flip: bool = True
    area_range: tuple[float, float] = (0.08, 1.0)
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


def _options(options_type: type, kind: str, options: dict):
    known = [f.name for f in fields(options_type)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown {kind} dataset options {unknown}; valid ones: {known}")
    return options_type(**options)


def _video_parts(split: str, opts: VideoOptions) -> tuple[FrameSampler, Callable]:
    test_mode = split != "train"
    num_clips = opts.test_clips if split == "test" else 1
    sampler = FrameSampler(opts.clip_len, opts.frame_interval, num_clips, test_mode, opts.sampling)
    if split == "train":
        transform = video_train_transform(opts.size, opts.short_side, opts.flip, opts.area_range,
                                          opts.aspect_ratio_range, opts.mean, opts.std)
    elif split == "val":
        transform = video_eval_transform(opts.size, opts.short_side, opts.mean, opts.std)
    else:
        transform = video_multiview_transform(num_clips, opts.test_crops, opts.size, opts.short_side,
                                              opts.mean, opts.std)
    return sampler, transform


def _image_transform(split: str, opts: ImageOptions) -> Callable:
    if split == "train":
        return image_train_transform(opts.size, opts.flip, opts.area_range, opts.aspect_ratio_range,
                                     opts.mean, opts.std)
    return image_eval_transform(opts.size, opts.crop_pct, opts.mean, opts.std)


def find_samples(root: str | os.PathLike, list_file: str | os.PathLike | None = None, split: str = "train",
                 kind: str | None = None,
                 classes: Sequence[str] | None = None) -> tuple[list[Sample], list[str], str]:
    """Locate the samples of ``split`` under ``root`` (rules in ``build_dataset``).

    Returns (samples, class names, description of the source for messages).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a directory")
    if list_file is None and (root / f"{split}.txt").is_file():
        list_file = root / f"{split}.txt"
    if list_file is not None:
        list_path = Path(list_file)
        if not list_path.is_file() and (root / list_path).is_file():
            list_path = root / list_path
        if not list_path.is_file():
            raise FileNotFoundError(f"list file {list_file} does not exist (nor under {root})")
        samples = read_list_file(list_path, root)
        classes_files = [folder / "classes.txt" for folder in (list_path.parent, root)
                         if (folder / "classes.txt").is_file()]
        if classes is None and classes_files:
            classes = read_classes_file(classes_files[0])
        if classes is None:
            classes = [str(label) for label in range(max((label for _, label in samples), default=-1) + 1)]
        return samples, list(classes), str(list_path)
    if (root / split).is_dir():
        folder = root / split
    else:
        split_folders = [name for name in SPLITS if (root / name).is_dir()]
        if split_folders:  # do not mistake the other splits' folders for classes
            raise FileNotFoundError(f"{root} has {', '.join(split_folders)} but neither {split}.txt nor {split}/")
        folder = root
    samples, class_names = scan_class_folders(folder, kind, classes)
    return samples, class_names, f"{folder} (a folder per class)"


def build_dataset(root: str | os.PathLike, list_file: str | os.PathLike | None = None, kind: str | None = None,
                  split: str = "train", *, classes: Sequence[str] | None = None, seed: int = 0,
                  timeout: float | None = 60.0, **options) -> VideoDataset | ImageDataset:
    """The dataset of one split, with the transforms of that split.

    Args:
        root: data folder; paths in list files are relative to it.
        list_file: mmaction2 list (``relative/path label`` per line), absolute or relative to the current
            folder or to ``root``. Class names come from ``classes.txt`` next to it or in ``root`` when
            present, else "0", "1", .... Without a list file: ``root/<split>.txt`` if it exists, else a folder per class
            in ``root/<split>/`` if that exists, else in ``root`` (class names = sorted folder names).
        kind: ``"video"``, ``"image"`` or None (from the file extensions).
        split: ``"train"`` (random sampling and augmentation), ``"val"`` (one centred clip, centre crop:
            items (C, T, H, W) / (C, H, W)) or ``"test"`` (videos: ``test_clips`` x ``test_crops`` views,
            items (V, C, T, H, W); images: as val).
        classes: class names in label order, overriding ``classes.txt`` / folder names (pass the train
            set's ``classes`` to val and test folders so labels agree).
        seed: base of the per-item random generators (see ``MediaDataset``).
        timeout: seconds allowed to read one file (None: no limit); slower files become skipped items.
        options: ``VideoOptions`` or ``ImageOptions`` fields (``clip_len``, ``size``, ``flip``, ...).

    Raises ValueError / FileNotFoundError at once for a missing root or list file, bad list lines, no
    samples, listed files that do not exist, labels outside the classes and unknown options.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if kind not in KINDS + (None,):
        raise ValueError(f"kind must be 'video', 'image' or None (auto), got {kind!r}")
    samples, class_names, source = find_samples(root, list_file, split, kind, classes)
    if not samples:
        raise ValueError(f"no samples found in {source}")
    kind = kind or infer_kind([path for path, _ in samples])
    common = {"seed": seed, "timeout": timeout, "source": source}
    if kind == "video":
        sampler, transform = _video_parts(split, _options(VideoOptions, kind, options))
        return VideoDataset(samples, class_names, sampler, transform, **common)
    return ImageDataset(samples, class_names, _image_transform(split, _options(ImageOptions, kind, options)),
                        **common)
