"""Decoding, datasets from list files and class folders, bad files, collate, build_dataset errors."""
import time

import av
import numpy as np
import pytest
import torch
from PIL import Image

from swinkit.data import (DecodeTimeout, ImageDataset, VideoDataset, VideoReader, build_dataset, collate,
                          read_frames, worker_context, write_video)

FRAMES = 12


def grey_video(path, frames=FRAMES, height=32, width=48):
    """Frame i is uniformly grey with value 20 * i (codec-independent up to a few levels)."""
    values = (np.arange(frames) * 20).astype(np.uint8)
    write_video(path, np.broadcast_to(values[:, None, None, None], (frames, height, width, 3)).copy())
    return path


def frame_values(frames):
    return [int(round(float(f.float().mean() if torch.is_tensor(f) else f.mean()) / 20)) for f in frames]


@pytest.fixture
def video_root(tmp_path):
    """root/{a,b}/*.mp4 and lists train.txt / val.txt / classes.txt."""
    for name in ("a/one.mp4", "a/two.mp4", "b/three.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        grey_video(tmp_path / name)
    (tmp_path / "train.txt").write_text("a/one.mp4 0\na/two.mp4 0\n\nb/three.mp4 1\n")
    (tmp_path / "val.txt").write_text("b/three.mp4 1\na/one.mp4 0\n")
    (tmp_path / "classes.txt").write_text("walking\nrunning\n")
    return tmp_path


def test_read_frames_exact_indices_any_order_and_wrap(tmp_path):
    path = grey_video(tmp_path / "v.mp4")
    frames = read_frames(path, [3, 0, 11, 3, 14])
    assert frames.shape == (5, 32, 48, 3) and frames.dtype == np.uint8
    assert frame_values(frames) == [3, 0, 11, 3, 2]  # 14 wraps to 14 % 12


def test_frame_count_when_container_reports_none(tmp_path):
    path = grey_video(tmp_path / "v.mkv", frames=7)  # Matroska stores no frame count
    with VideoReader(path) as video:
        assert video.num_frames == 7
        assert frame_values(video.read([6, 1])) == [6, 1]
        assert frame_values(video.read([2])) == [2]  # a second read starts again from the first frame


def test_decode_past_deadline_raises(tmp_path):
    path = grey_video(tmp_path / "v.mp4")
    with pytest.raises(DecodeTimeout):
        read_frames(path, [11], deadline=time.monotonic() - 1)


def test_list_file_dataset_val_items(video_root):
    dataset = build_dataset(video_root, split="val", clip_len=4, frame_interval=2, size=16)
    assert isinstance(dataset, VideoDataset) and len(dataset) == 2
    assert dataset.classes == ["walking", "running"] and dataset.labels == [1, 0]
    item = dataset[0]
    assert item["error"] is None and item["label"] == 1 and item["index"] == 0
    assert item["path"].endswith("three.mp4")
    assert item["inputs"].shape == (3, 4, 16, 16) and item["inputs"].dtype == torch.float32
    # test-mode sampling of 12 frames, span 7: start 5 // 2 = 2 -> frames 2, 4, 6, 8
    grey = item["inputs"][0, :, 0, 0] * 58.395 + 123.675
    assert [round(float(v) / 20) for v in grey] == [2, 4, 6, 8]


def test_explicit_list_file_and_default_class_names(video_root):
    (video_root / "lists").mkdir()
    (video_root / "lists" / "mine.txt").write_text("a/one.mp4 0\nb/three.mp4 2\n")
    (video_root / "classes.txt").unlink()
    dataset = build_dataset(video_root, list_file="lists/mine.txt", split="val", clip_len=2, size=16)
    assert dataset.classes == ["0", "1", "2"] and dataset.labels == [0, 2]
    (video_root / "classes.txt").write_text("x\ny\nz\n")  # in root: used when none is next to the list
    assert build_dataset(video_root, list_file="lists/mine.txt", split="val").classes == ["x", "y", "z"]


def test_test_split_gives_clip_major_views(video_root):
    dataset = build_dataset(video_root, split="val", clip_len=2, size=16)
    test = build_dataset(video_root, list_file="val.txt", split="test", clip_len=2, size=16, test_clips=2,
                         test_crops=3)
    assert test[0]["inputs"].shape == (6, 3, 2, 16, 16)
    assert dataset[0]["inputs"].shape == (3, 2, 16, 16)


def test_class_folder_dataset(video_root):
    for name in ("train.txt", "val.txt", "classes.txt"):
        (video_root / name).unlink()
    dataset = build_dataset(video_root, split="train", clip_len=4, size=16)
    assert dataset.classes == ["a", "b"] and dataset.labels == [0, 0, 1]
    assert [p.rsplit("/", 1)[-1] for p, _ in dataset.samples] == ["one.mp4", "two.mp4", "three.mp4"]
    pinned = build_dataset(video_root, split="val", clip_len=4, size=16, classes=["b", "a", "c"])
    assert pinned.labels == [0, 1, 1]  # samples in class order: b/three, a/one, a/two
    with pytest.raises(ValueError, match="not in the given classes"):
        build_dataset(video_root, clip_len=4, classes=["a"])


def test_train_items_are_reproducible_per_seed_and_epoch(video_root):
    dataset = build_dataset(video_root, split="train", clip_len=4, size=16, seed=5)
    first = dataset[1]["inputs"]
    assert first.shape == (3, 4, 16, 16)
    assert torch.equal(first, dataset[1]["inputs"])
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset[1]["inputs"])
    dataset.set_epoch(0)
    assert torch.equal(first, dataset[1]["inputs"])


def test_image_dataset_from_class_folders(tmp_path):
    rng = np.random.default_rng(0)
    for index, name in enumerate(["cat/x.png", "cat/y.jpg", "dog/z.png"]):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + index, 30, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "dog" / "broken.png").write_bytes(rng.bytes(500))
    dataset = build_dataset(tmp_path, split="val", size=16)
    assert isinstance(dataset, ImageDataset) and dataset.classes == ["cat", "dog"] and len(dataset) == 4
    batch = collate([dataset[i] for i in range(4)])
    assert batch["inputs"].shape == (3, 3, 16, 16) and batch["labels"].tolist() == [0, 0, 1]
    assert [p.rsplit("/", 1)[-1] for p, _ in batch["skipped"]] == ["broken.png"]
    assert build_dataset(tmp_path, split="train", size=8)[3]["inputs"].shape == (3, 8, 8)


def faststart_video(path, frames=FRAMES):
    """An mp4 with its index first, so a cut file still opens and fails while decoding."""
    noise = np.random.default_rng(1).integers(0, 256, (frames, 32, 48, 3), dtype=np.uint8)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for image in noise:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_corrupt_and_truncated_files_are_skipped_and_reported(video_root):
    (video_root / "bad").mkdir()
    (video_root / "bad" / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    whole = (video_root / "a" / "one.mp4").read_bytes()
    (video_root / "bad" / "cut.mp4").write_bytes(whole[: len(whole) // 2])  # index at the end: cannot open
    whole = faststart_video(video_root / "bad" / "full.mp4").read_bytes()
    (video_root / "bad" / "cut_late.mp4").write_bytes(whole[: len(whole) * 6 // 10])  # fails mid-decode
    (video_root / "bad.txt").write_text("bad/noise.mp4 0\na/two.mp4 0\nbad/cut.mp4 1\nb/three.mp4 1\n"
                                        "bad/cut_late.mp4 1\n")
    dataset = build_dataset(video_root, list_file="bad.txt", split="val", clip_len=4, size=16)
    items = [dataset[i] for i in range(len(dataset))]
    assert [item["error"] is None for item in items] == [False, True, False, True, False]
    assert items[0]["inputs"] is None
    batch = collate(items)
    assert batch["inputs"].shape == (2, 3, 4, 16, 16)
    assert batch["labels"].tolist() == [0, 1] and batch["indices"].tolist() == [1, 3]
    assert [p.rsplit("/", 1)[-1] for p in batch["paths"]] == ["two.mp4", "three.mp4"]
    assert [p.rsplit("/", 1)[-1] for p, _ in batch["skipped"]] == ["noise.mp4", "cut.mp4", "cut_late.mp4"]
    assert all(message for _, message in batch["skipped"])
    all_bad = collate([items[0], items[2]])
    assert all_bad["inputs"] is None and all_bad["labels"].tolist() == [] and len(all_bad["skipped"]) == 2


def test_dataloader_with_collate(video_root):
    dataset = build_dataset(video_root, split="train", clip_len=4, size=16)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
    batches = list(loader)
    assert [b["inputs"].shape[0] for b in batches] == [2, 1]
    assert torch.cat([b["labels"] for b in batches]).tolist() == [0, 0, 1]


def test_dataloader_workers_after_use_in_the_main_process(video_root):
    dataset = build_dataset(video_root, split="val", clip_len=4, size=16)
    assert dataset[0]["error"] is None  # starts the reading thread here; workers need their own
    context = worker_context(2)
    assert context is not None and context.get_start_method() == "forkserver"  # not fork (Linux)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=collate,
                                         multiprocessing_context=context)
    assert [batch["skipped"] for batch in loader] == [[], []]
    assert worker_context(0) is None


def test_hanging_read_times_out_and_the_next_file_still_reads(video_root, monkeypatch):
    dataset = build_dataset(video_root, split="val", clip_len=4, size=16, timeout=0.5)
    load = VideoDataset.load

    def hang_on_three(self, path, rng, deadline):
        if path.endswith("three.mp4"):
            time.sleep(3)
        return load(self, path, rng, deadline)

    monkeypatch.setattr(VideoDataset, "load", hang_on_three)
    started = time.monotonic()
    item = dataset[0]
    assert time.monotonic() - started < 2
    assert item["inputs"] is None and item["error"].startswith("TimeoutError")
    assert dataset[1]["error"] is None and dataset[1]["path"].endswith("one.mp4")


def test_missing_listed_file_fails_at_construction(video_root):
    (video_root / "val.txt").write_text("a/one.mp4 0\na/gone.mp4 1\n")
    with pytest.raises(FileNotFoundError, match="1 of 2 listed files do not exist: .*gone.mp4"):
        build_dataset(video_root, split="val")


@pytest.mark.parametrize("content, message", [
    ("", "no samples found"),
    ("# only a comment\n", "no samples found"),
    ("a/one.mp4\n", "val.txt:1: expected 'relative/path label'"),
    ("a/one.mp4 0\na/two.mp4 x\n", "val.txt:2"),
    ("a/one.mp4 7\n", r"labels \[7\] are outside the 2 classes"),
])
def test_bad_list_files_fail_at_construction(video_root, content, message):
    (video_root / "val.txt").write_text(content)
    with pytest.raises(ValueError, match=message):
        build_dataset(video_root, split="val")


def test_empty_folder_and_bad_arguments(tmp_path, video_root):
    (tmp_path / "empty" / "class_a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no samples found"):
        build_dataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_dataset(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="list file"):
        build_dataset(video_root, list_file="nope.txt")
    (tmp_path / "splits" / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has train but neither test.txt nor test/"):
        build_dataset(tmp_path / "splits", split="test")
    with pytest.raises(ValueError, match="split"):
        build_dataset(video_root, split="training")
    with pytest.raises(ValueError, match=r"unknown video dataset options \['crop_pct'\]"):
        build_dataset(video_root, crop_pct=0.9)
    with pytest.raises(ValueError, match="size <= short_side"):
        build_dataset(video_root, size=32, short_side=24)
    with pytest.raises(ValueError, match="test_crops"):
        build_dataset(video_root, split="test", test_crops=5)
