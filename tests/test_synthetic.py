"""Synthetic datasets: decodable, right frame counts, balanced, deterministic, motion that matches the label."""
import argparse
import json
from collections import Counter

import numpy as np
import pytest

from swinkit.cli import CLIError
from swinkit.cli import data as data_cli
from swinkit.data import (VideoReader, build_dataset, make_dataset, make_image_dataset, read_classes_file,
                          read_list_file)
from swinkit.data.synthetic import render_motion_clip

SMALL = {"num_train": 8, "num_val": 4, "num_test": 4, "frames": 8, "size": 32}


def decode_all(root):
    """{relative path: (T, H, W, 3) frames} of every listed video."""
    clips = {}
    for split in ("train", "val", "test"):
        for path, _ in read_list_file(root / f"{split}.txt", root):
            with VideoReader(path) as video:
                clips[path[len(str(root)):]] = video.read(range(video.num_frames))
    return clips


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "motion"
    make_dataset(root, seed=3, **SMALL)
    return root


def test_layout_counts_and_balanced_labels(small_dataset):
    classes = read_classes_file(small_dataset / "classes.txt")
    assert classes == ["move_up", "move_down", "grow", "shrink"]
    for split, count in (("train", 8), ("val", 4), ("test", 4)):
        samples = read_list_file(small_dataset / f"{split}.txt", small_dataset)
        assert len(samples) == count
        assert Counter(label for _, label in samples) == {label: count // 4 for label in range(4)}
        for path, label in samples:
            assert f"/{split}/{classes[label]}/" in path and path.endswith(".mp4")
    settings = json.loads((small_dataset / "synthetic.json").read_text())
    assert settings["frames"] == 8 and settings["flip_safe"] and settings["counts"]["train"] == 8


def test_videos_decode_with_the_right_frame_count(small_dataset):
    clips = decode_all(small_dataset)
    assert len(clips) == 16
    assert {frames.shape for frames in clips.values()} == {(8, 32, 32, 3)}
    # not a still: consecutive frames differ (noise and motion)
    assert all(np.abs(np.diff(frames.astype(int), axis=0)).mean() > 1 for frames in clips.values())


def test_same_seed_same_frames_other_seed_other_frames(small_dataset, tmp_path):
    make_dataset(tmp_path / "again", seed=3, **SMALL)
    make_dataset(tmp_path / "other", seed=4, **SMALL)
    first, again, other = (decode_all(root) for root in (small_dataset, tmp_path / "again", tmp_path / "other"))
    assert first.keys() == again.keys()
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert (small_dataset / "train.txt").read_text() == (tmp_path / "again" / "train.txt").read_text()
    shared = first.keys() & other.keys()
    assert not any(np.array_equal(first[name], other[name]) for name in shared)


def test_build_dataset_reads_the_generated_splits(small_dataset):
    train = build_dataset(small_dataset, split="train", clip_len=8, size=32, flip=False)
    test = build_dataset(small_dataset, split="test", clip_len=8, size=32)
    assert train.classes == ["move_up", "move_down", "grow", "shrink"] and len(train) == 8 and len(test) == 4
    item = train[0]
    assert item["error"] is None and item["inputs"].shape == (3, 8, 32, 32)
    assert test[0]["inputs"].shape == (1, 3, 8, 32, 32)


def object_track(frames):
    """Per-frame circular centroid (x, y) of the pixels far from each pixel's temporal median."""
    frames = frames.astype(float)
    mask = np.abs(frames - np.median(frames, axis=0)).sum(-1) > 120  # (T, H, W)
    size = frames.shape[1]
    angles = 2 * np.pi * (np.arange(size) + 0.5) / size
    track = []
    for frame_mask in mask:
        ys, xs = np.nonzero(frame_mask)
        track.append([np.angle(np.exp(1j * angles[coords]).mean()) * size / (2 * np.pi) for coords in (xs, ys)])
    return np.array(track)


@pytest.mark.parametrize("motion, axis, sign", [
    ("move_up", 1, -1), ("move_down", 1, 1), ("move_left", 0, -1), ("move_right", 0, 1),
])
def test_moving_objects_travel_in_their_direction(motion, axis, sign):
    for seed in range(3):
        frames = render_motion_clip(motion, 16, 32, np.random.default_rng(seed))
        track = object_track(frames)
        steps = (np.diff(track, axis=0) + 16) % 32 - 16  # wrap-around of the 32-pixel torus
        assert sign * np.median(steps[:, axis]) >= 0.7
        assert abs(np.median(steps[:, 1 - axis])) < 0.6


@pytest.mark.parametrize("motion, grows", [("grow", True), ("shrink", False)])
def test_grow_and_shrink_change_the_object_size(motion, grows):
    for seed in range(3):
        frames = render_motion_clip(motion, 16, 32, np.random.default_rng(seed)).astype(float)
        # the object's colour is far from the background's: count pixels near the frame's extreme cluster
        first, last = frames[0], frames[-1]
        background = np.median(np.concatenate([first[0], first[-1], last[0], last[-1]]), axis=0)
        area = [int((np.abs(f - background).sum(-1) > 150).sum()) for f in (first, last)]
        assert (area[1] > 2 * area[0]) if grows else (area[0] > 2 * area[1])


def test_image_dataset(tmp_path):
    summary = make_image_dataset(tmp_path / "shapes", num_train=8, num_val=4, num_test=4, size=24, seed=1)
    again = make_image_dataset(tmp_path / "again", num_train=8, num_val=4, num_test=4, size=24, seed=1)
    assert summary["classes"] == ["circle", "square", "triangle", "cross"]
    train = build_dataset(tmp_path / "shapes", split="val", size=16)
    assert len(train) == 4 and sorted(train.labels) == [0, 1, 2, 3]
    assert train[0]["inputs"].shape == (3, 16, 16)
    for path, _ in read_list_file(tmp_path / "shapes" / "train.txt", tmp_path / "shapes"):
        assert open(path, "rb").read() == open(path.replace("/shapes/", "/again/"), "rb").read()
    assert again["counts"] == summary["counts"]


def test_out_dir_rules(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, num_train=4, num_val=0, num_test=0, frames=4, size=16)
    with pytest.raises(ValueError, match="not empty"):
        make_dataset(root, num_train=4, frames=4, size=16)
    make_dataset(root, num_train=8, num_val=0, num_test=0, frames=4, size=16, overwrite=True)
    assert len(read_list_file(root / "train.txt", root)) == 8
    assert len(list((root / "train").rglob("*.mp4"))) == 8  # the earlier files are gone
    with pytest.raises(ValueError, match="no samples"):
        build_dataset(root, split="val")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not made by"):
        make_dataset(foreign, num_train=4, frames=4, size=16, overwrite=True)
    assert (foreign / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("kwargs, message", [
    ({"classes": ["jump"]}, "unknown motion classes"),
    ({"classes": ["grow", "grow"]}, "distinct"),
    ({"size": 33}, "even"),
    ({"frames": 1}, "at least 2 frames"),
    ({"num_train": 0}, "num_train"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_dataset(tmp_path / "x", **{"num_train": 4, "frames": 4, "size": 16, **kwargs})


def run_cli(argv):
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_make_dataset_command(tmp_path, capsys):
    out_dir = tmp_path / "cli"
    code = run_cli(["make-dataset", str(out_dir), "--num-train", "6", "--num-val", "2", "--num-test", "2",
                    "--frames", "4", "--size", "16", "--classes", "move_left,move_right", "--seed", "2"])
    assert code == 0
    output = capsys.readouterr().out
    assert "wrote 6 train / 2 val / 2 test 4x16x16 clips" in output and "flip=False" in output
    assert read_classes_file(out_dir / "classes.txt") == ["move_left", "move_right"]
    with pytest.raises(CLIError, match="--frames"):
        run_cli(["make-dataset", str(tmp_path / "img"), "--kind", "image", "--frames", "4"])
