"""Frame sampling follows mmaction2 1.x SampleFrames / UniformSample; expected indices computed by hand."""
import numpy as np
import pytest

from swinkit.data.sampling import FrameSampler, sample_frames, uniform_sample


def clips(indices, clip_len):
    return np.asarray(indices).reshape(-1, clip_len).tolist()


# SampleFrames, test mode: evenly spaced starts, modulo for short videos.
@pytest.mark.parametrize("num_frames, clip_len, interval, num_clips, expected", [
    # span 15, max_offset 85 -> one centred clip starting at 85 // 2 = 42
    (100, 8, 2, 1, [[42, 44, 46, 48, 50, 52, 54, 56]]),
    # span 7, max_offset 93, step 46.5 -> round(0, 46.5, 93) = 0, 46 (half to even), 93
    (100, 4, 2, 3, [[0, 2, 4, 6], [46, 48, 50, 52], [93, 95, 97, 99]]),
    # short: span 7 > 5 frames -> start 0, indices wrap: 6 % 5 = 1
    (5, 4, 2, 1, [[0, 2, 4, 1]]),
    # short, two clips: both start at 0 and loop
    (3, 4, 1, 2, [[0, 1, 2, 0], [0, 1, 2, 0]]),
    # clip_len 1 (mmaction2's 2D rule): middles of 3 segments of 10/3 frames -> 1.67, 5.0, 8.33 -> 1, 5, 8
    (10, 1, 1, 3, [[1], [5], [8]]),
    # exactly the clip's span: the only clip
    (7, 4, 2, 1, [[0, 2, 4, 6]]),
])
def test_sample_frames_test_mode(num_frames, clip_len, interval, num_clips, expected):
    indices = sample_frames(num_frames, clip_len, interval, num_clips, test_mode=True)
    assert indices.dtype == np.int64
    assert clips(indices, clip_len) == expected


def test_sample_frames_train_one_clip_draws_offset_in_segment():
    # span 16, avg_interval = 100 - 16 + 1 = 85: offset = randint(85)
    for seed in range(5):
        indices = sample_frames(100, 8, 2, 1, rng=np.random.default_rng(seed))
        offset = np.random.default_rng(seed).integers(85, size=1)[0]
        assert indices.tolist() == [offset + 2 * k for k in range(8)]
    offsets = {sample_frames(100, 8, 2, 1, rng=np.random.default_rng(s))[0] for s in range(3000)}
    assert min(offsets) == 0 and max(offsets) == 84  # the last clip ends at frame 98 + 1 = 99


def test_sample_frames_train_several_clips_one_per_segment():
    # avg_interval = (100 - 16 + 1) // 4 = 21: offsets (0, 21, 42, 63) + randint(21, size=4)
    indices = sample_frames(100, 8, 2, 4, rng=np.random.default_rng(7))
    expected_offsets = np.arange(4) * 21 + np.random.default_rng(7).integers(21, size=4)
    assert clips(indices, 8) == [[o + 2 * k for k in range(8)] for o in expected_offsets]


def test_sample_frames_train_sorted_random_starts_when_segments_are_empty():
    # span 8, avg_interval = 3 // 4 = 0, but 10 > max(4, 8): sorted randint(3, size=4)
    indices = sample_frames(10, 4, 2, 4, rng=np.random.default_rng(11))
    expected_offsets = np.sort(np.random.default_rng(11).integers(3, size=4))
    assert clips(indices, 4) == [[o + 2 * k for k in range(4)] for o in expected_offsets]


@pytest.mark.parametrize("num_frames, clip_len, interval, num_clips, expected", [
    # avg_interval 0 and 8 <= max(3, 8): offsets around((0, 1/3, 2/3)) = 0, 0, 1
    (8, 4, 2, 3, [[0, 2, 4, 6], [0, 2, 4, 6], [1, 3, 5, 7]]),
    # avg_interval 0, one clip: offset 0, index 6 wraps to 6 % 7 = 6
    (7, 4, 2, 1, [[0, 2, 4, 6]]),
    # avg_interval < 0 (short video): zero offsets, loop: 6 % 5 = 1
    (5, 4, 2, 1, [[0, 2, 4, 1]]),
    (2, 3, 1, 1, [[0, 1, 0]]),
])
def test_sample_frames_train_short_videos_are_deterministic(num_frames, clip_len, interval, num_clips, expected):
    indices = sample_frames(num_frames, clip_len, interval, num_clips, rng=np.random.default_rng(0))
    assert clips(indices, clip_len) == expected


@pytest.mark.parametrize("num_clips, expected", [
    # segments of (10 - 1) / 4 = 2.25: starts round(0, 2.25, 4.5, 6.75) = 0, 2, 4, 7
    (1, [1, 3, 5, 8]),  # + int(2.25 / 2) = 1
    (2, [0, 2, 4, 7, 1, 3, 5, 8]),  # + int(0.75), int(1.5)
])
def test_uniform_sample_test_mode(num_clips, expected):
    assert uniform_sample(10, 4, num_clips, test_mode=True).tolist() == expected


def test_uniform_sample_short_video_repeats_frames():
    # segments of 0.5: starts round(0, 0.5, 1.0, 1.5) = 0, 0, 1, 2
    assert uniform_sample(3, 4, test_mode=True).tolist() == [0, 0, 1, 2]
    assert uniform_sample(1, 4, rng=np.random.default_rng(0)).tolist() == [0, 0, 0, 0]


def test_uniform_sample_train_draws_within_segments_ends_included():
    # segments [0, 2], [2, 4], [4, 7], [7, 9]
    low, high = np.array([0, 2, 4, 7]), np.array([2, 4, 7, 9])
    for seed in range(5):
        expected = np.random.default_rng(seed).integers(low, high + 1)
        assert uniform_sample(10, 4, rng=np.random.default_rng(seed)).tolist() == expected.tolist()
    draws = np.stack([uniform_sample(10, 4, rng=np.random.default_rng(s)) for s in range(500)])
    assert draws.min(axis=0).tolist() == low.tolist() and draws.max(axis=0).tolist() == high.tolist()


def test_frame_sampler_dispatches_and_validates():
    assert FrameSampler(8, 2, 1, test_mode=True)(100).tolist() == sample_frames(100, 8, 2, test_mode=True).tolist()
    assert FrameSampler(4, method="uniform", test_mode=True)(10).tolist() == [1, 3, 5, 8]
    with pytest.raises(ValueError, match="sampling method"):
        FrameSampler(4, method="dense")
    with pytest.raises(ValueError, match="one clip in training"):
        FrameSampler(4, num_clips=2, method="uniform")


def test_sampling_errors():
    with pytest.raises(ValueError, match="at least 1 frame"):
        sample_frames(0, 4, test_mode=True)
    with pytest.raises(ValueError, match="rng"):
        sample_frames(10, 4)
    with pytest.raises(ValueError, match="rng"):
        uniform_sample(10, 4)
    with pytest.raises(ValueError, match="clip_len"):
        sample_frames(10, 0, test_mode=True)
