"""``swinkit train / eval / predict / extract`` on real files (tiny mp4 and png written here)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from swinkit import create_model
from swinkit.cli import main
from swinkit.data import build_dataset
from swinkit.data.synthetic import make_dataset

TINY_VIDEO = ["--model", "video_swin_t",
              "--model-kwargs", "{embed_dim: 8, depths: [1, 1], num_heads: [1, 1], window_size: [2, 4, 4]}",
              "--data-options", "{clip_len: 4, frame_interval: 2, size: 32, test_clips: 2, test_crops: 3}",
              "--batch-size", "4", "--epochs", "2", "--lr", "2e-3", "--warmup-epochs", "0.5", "--seed", "5",
              "--label-smoothing", "0.1", "--no-progress"]
TINY_SWIN_2D = {"embed_dim": 8, "depths": [1, 1], "num_heads": [1, 1], "window_size": 4, "num_classes": 3}


@pytest.fixture(scope="module")
def video_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    make_dataset(root / "data", num_train=12, num_val=4, num_test=4, frames=8, size=32, seed=0)
    return root / "data"


@pytest.fixture(scope="module")
def trained_run(video_data):
    run_dir = video_data.parent / "run"
    # one data-loading worker here; the interrupted run below uses none: results must not depend on it
    assert main(["train", "--data-root", str(video_data), "--output-dir", str(run_dir), "--num-workers", "1"]
                + TINY_VIDEO) == 0
    return run_dir


def test_train_writes_checkpoint_log_and_curves(trained_run, capsys):
    assert {p.name for p in trained_run.iterdir()} == {"last.pt", "best.pt", "log.jsonl", "curves.png"}
    records = [json.loads(line) for line in (trained_run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and [r["step"] for r in records] == [3, 6]
    for record in records:
        assert record["train_samples"] == 12 and record["val_count"] == 4 and record["skipped"] == 0
        assert 0.0 <= record["val_top1"] <= 1.0 and record["train_loss"] > 0
    assert (trained_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = torch.load(trained_run / "last.pt", weights_only=True)
    assert ckpt["classes"] == ["move_up", "move_down", "grow", "shrink"] and ckpt["kind"] == "video"
    assert ckpt["model_config"]["embed_dim"] == 8 and ckpt["data_options"]["clip_len"] == 4


def test_stop_and_resume_from_the_command_line_is_bitwise_identical(video_data, trained_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    base = ["train", "--data-root", str(video_data), "--output-dir", str(run_dir), "--num-workers", "0"] + TINY_VIDEO
    assert main(base + ["--stop-after-steps", "4"]) == 0
    assert "stopped after step 4" in capsys.readouterr().out
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 1
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert "resumed at epoch 2, step 4" in capsys.readouterr().out
    expected = torch.load(trained_run / "last.pt", weights_only=True)["model"]
    resumed = torch.load(run_dir / "last.pt", weights_only=True)
    assert resumed["step"] == 6
    for name, value in expected.items():
        assert torch.equal(value, resumed["model"][name]), name


def test_eval_json_reports_multiview_metrics(video_data, trained_run, capsys):
    assert main(["eval", "--checkpoint", str(trained_run / "last.pt"), "--data-root", str(video_data), "--json",
                 "--max-views-per-batch", "4", "--no-progress"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["count"] == 4 and metrics["classes"] == ["move_up", "move_down", "grow", "shrink"]
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (4, 4) and confusion.sum() == 4
    assert metrics["top1"] == pytest.approx(np.trace(confusion) / 4) and metrics["top5"] == 1.0


def test_eval_table_prints_per_class_accuracy_and_confusion_matrix(video_data, trained_run, capsys):
    assert main(["eval", "--checkpoint", str(trained_run), "--data-root", str(video_data), "--split", "val",
                 "--average", "score", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "mean class acc" in out and "confusion matrix" in out
    assert all(name in out for name in ("move_up", "move_down", "grow", "shrink"))


def test_predict_videos_table_and_json(video_data, trained_run, capsys):
    one = sorted((video_data / "test").rglob("*.mp4"))[0]
    assert main(["predict", str(one), "--checkpoint", str(trained_run), "--topk", "2", "--no-progress"]) == 0
    row = capsys.readouterr().out.strip()
    assert row.startswith(str(one)) and len(row.split()) == 5  # path, 2 x (class, probability)
    assert main(["predict", str(video_data / "test"), "--checkpoint", str(trained_run), "--json", "--topk", "4",
                 "--no-progress"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 4
    for record in results:
        probs = [t["prob"] for t in record["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)


def test_extract_video_features(video_data, trained_run, tmp_path, capsys):
    from safetensors import safe_open

    out = tmp_path / "features.safetensors"
    assert main(["extract", str(video_data / "test"), "--checkpoint", str(trained_run), "--out", str(out),
                 "--stages", "all", "--batch-size", "2", "--no-progress"]) == 0
    with safe_open(str(out), "pt") as f:
        assert sorted(f.keys()) == ["stage0", "stage1"]
        assert f.get_tensor("stage0").shape == (4, 8, 2, 8, 8) and f.get_tensor("stage1").shape == (4, 16, 2, 4, 4)
        paths = json.loads(f.metadata()["paths"])
    assert len(paths) == 4 and all(p.endswith(".mp4") for p in paths)


@pytest.fixture(scope="module")
def image_model_files(tmp_path_factory):
    """Weights of a tiny 2D Swin, a classes file and three png images in a folder."""
    root = tmp_path_factory.mktemp("images")
    torch.manual_seed(0)
    model = create_model("swin_t", **TINY_SWIN_2D).eval()
    torch.save(model.state_dict(), root / "weights.pt")
    (root / "classes.txt").write_text("circle\nsquare\ncross\n")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(root / "images" / f"img{i}.png")
    return root, model


def test_predict_images_with_registered_model_and_weights(image_model_files, capsys):
    root, model = image_model_files
    assert main(["predict", str(root / "images"), "--model", "swin_t", "--model-kwargs", json.dumps(TINY_SWIN_2D),
                 "--weights", str(root / "weights.pt"), "--classes", str(root / "classes.txt"), "--topk", "3",
                 "--data-options", "{size: 32}", "--json", "--no-progress"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [Path(r["path"]).name for r in results] == ["img0.png", "img1.png", "img2.png"]
    # the same numbers as the model on the data pipeline's evaluation transform
    dataset = build_dataset(root, kind="image", split="test", classes=["images"], size=32)
    with torch.no_grad():
        expected = model(torch.stack([dataset[i]["inputs"] for i in range(3)])).softmax(-1)
    for record, probs in zip(results, expected):
        got = {t["class"]: t["prob"] for t in record["top"]}
        want = dict(zip(["circle", "square", "cross"], probs.tolist()))
        assert got == pytest.approx(want, abs=1e-5)


def test_extract_image_features_to_npy(image_model_files, tmp_path, capsys):
    root, model = image_model_files
    common = ["--model", "swin_t", "--model-kwargs", json.dumps(TINY_SWIN_2D), "--weights", str(root / "weights.pt"),
              "--data-options", "{size: 32}", "--batch-size", "2", "--no-progress"]
    assert main(["extract", str(root / "images"), "--out", str(tmp_path / "pooled.npy")] + common) == 0
    pooled = np.load(tmp_path / "pooled.npy")
    assert pooled.shape == (3, model.num_features)
    assert json.loads((tmp_path / "pooled.paths.json").read_text())[0].endswith("img0.png")
    assert main(["extract", str(root / "images"), "--out", str(tmp_path / "maps.npy"), "--stages", "0,-1"]
                + common) == 0
    assert np.load(tmp_path / "maps.stage0.npy").shape == (3, 8, 8, 8)
    stage1 = np.load(tmp_path / "maps.stage1.npy")
    assert stage1.shape == (3, 16, 4, 4)
    # pooled features are the mean of the (normalised) last stage map
    np.testing.assert_allclose(pooled, stage1.mean(axis=(2, 3)), atol=1e-5)


def test_corrupt_training_samples_are_skipped_and_named(tmp_path, capsys):
    make_dataset(tmp_path / "data", num_train=8, num_val=0, num_test=0, frames=8, size=32, seed=1)
    broken = sorted((tmp_path / "data" / "train").rglob("*.mp4"))[0]
    broken.write_bytes(b"not a video")
    assert main(["train", "--data-root", str(tmp_path / "data"), "--output-dir", str(tmp_path / "run"),
                 "--num-workers", "0"] + TINY_VIDEO + ["--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 unreadable sample(s)" in out and broken.name in out
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text())
    assert record["skipped"] == 1 and record["train_samples"] == 7
    assert record["skipped_samples"][0]["path"].endswith(broken.name)


BAD_COMMANDS = {
    "no data": (["train"], "no training data"),
    "batch size zero": (["train", "--data-root", "{data}", "--batch-size", "0"], "batch_size must be >= 1"),
    "batch size text": (["train", "--data-root", "{data}", "--batch-size", "two"], "batch_size expects an integer"),
    "unknown preset": (["train", "--preset", "swin_huge"], "invalid choice"),
    "bad model kwargs": (["train", "--data-root", "{data}", "--model-kwargs", "[1, 2]"], "YAML mapping"),
    "unknown model": (["train", "--data-root", "{data}", "--model", "resnet50", "--no-progress"], "unknown model"),
    "missing config": (["train", "--config", "{tmp}/nope.yaml"], "config file not found"),
    "nothing to resume": (["train", "--resume", "{tmp}/nope"], "nothing to resume"),
    "preset and resume": (["train", "--resume", "{tmp}", "--preset", "swin_imagenet_t"], "cannot be combined"),
    "fp16 on cpu": (["train", "--data-root", "{data}", "--device", "cpu", "--precision", "fp16"] + TINY_VIDEO,
                    "fp16 needs a GPU"),
    "missing data root": (["train", "--data-root", "{tmp}/nope"], "is not a directory"),
    "too few samples": (["train", "--data-root", "{data}"] + TINY_VIDEO + ["--batch-size", "64"],
                        "fewer than one optimiser step"),
    "eval without model": (["eval", "--data-root", "{data}"], "no model"),
    "missing checkpoint": (["eval", "--data-root", "{data}", "--checkpoint", "{tmp}/nope.pt"], "not found"),
    "foreign checkpoint": (["eval", "--data-root", "{data}", "--checkpoint", "{tmp}/plain.pt"],
                           "not a swinkit training checkpoint"),
    "model without weights": (["predict", "{data}", "--model", "swin_t"], "--model needs --weights"),
    "missing input": (["predict", "{tmp}/nope.mp4", "--checkpoint", "{run}"], "no such file or folder"),
    "image for a video model": (["predict", "{tmp}/image.png", "--checkpoint", "{run}"], "is not a video file"),
    "bad output suffix": (["extract", "{data}", "--checkpoint", "{run}", "--out", "{tmp}/f.txt"],
                          "must end in .safetensors or .npy"),
    "bad stage": (["extract", "{data}", "--checkpoint", "{run}", "--out", "{tmp}/f.npy", "--stages", "7"],
                  "stage 7 does not exist"),
    "bad topk": (["predict", "{data}", "--checkpoint", "{run}", "--topk", "0"], "expected an integer >= 1"),
}


@pytest.mark.parametrize("name", sorted(BAD_COMMANDS))
def test_user_errors_give_one_line_and_a_nonzero_exit(name, video_data, trained_run, tmp_path, capsys):
    argv, message = BAD_COMMANDS[name]
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pt")
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    places = {"{data}": str(video_data), "{tmp}": str(tmp_path), "{run}": str(trained_run)}
    for key, value in places.items():
        argv = [a.replace(key, value) for a in argv]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err
    assert err.strip().splitlines()[-1].startswith("swinkit: error:")


def test_python_dash_m_reports_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "swinkit", "train", "--batch-size", "0", "--data-root",
                             str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "batch_size must be >= 1" in result.stderr
