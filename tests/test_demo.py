"""``swinkit demo --fast``: every step of the demo on a handful of samples."""
import json
import re

import pytest
import torch

from swinkit.cli import main
from swinkit.cli.demo import ShuffledFrames


def test_fast_video_demo_runs_every_step(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative work directory, as the default "swinkit-demo" is
    assert main(["demo", "--fast", "--workdir", "demo-dir", "--no-progress"]) == 0
    tmp_path = tmp_path / "demo-dir"
    out = capsys.readouterr().out
    for step in range(1, 6):
        assert f"[{step}/5]" in out
    assert "confusion matrix" in out and "frames shuffled in time" in out and "summary: test top-1" in out
    rows = re.findall(r"^  test_\d+\.mp4: true (\w+) +predicted (\w+)", out, flags=re.MULTILINE)
    assert sorted(true for true, _ in rows) == ["grow", "move_down", "move_up", "shrink"]  # one per class
    run = tmp_path / "video" / "run"
    assert {"last.pt", "log.jsonl", "curves.png"} <= {p.name for p in run.iterdir()}
    record = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and record["train_samples"] == 16
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["model_name"] == "video_swin_t" and ckpt["data_options"]["test_clips"] == 3


@pytest.mark.parametrize("family, model", [("shunted", "shunted_t"), ("swin", "swin_t")])
def test_fast_image_demo(family, model, tmp_path, capsys):
    assert main(["demo", "--task", "image", "--image-model", family, "--fast", "--workdir", str(tmp_path),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"training {model}" in out and "control: skipped" in out and "summary: test top-1" in out
    assert torch.load(tmp_path / "image" / "run" / "last.pt", weights_only=True)["model_name"] == model


class Clips(torch.utils.data.Dataset):
    classes, kind = ["a"], "video"

    def __len__(self):
        return 2

    def __getitem__(self, index):
        frames = torch.arange(6.0).view(1, 1, 6, 1, 1).expand(2, 3, 6, 4, 4)  # (V, C, T, H, W), frame t = t
        return {"inputs": frames + 10 * index, "label": 0, "index": index, "path": f"{index}.mp4", "error": None}


def test_shuffled_frames_permute_time_only_and_the_same_way_for_every_view():
    shuffled = ShuffledFrames(Clips(), seed=0)
    item = shuffled[0]
    order = item["inputs"][0, 0, :, 0, 0]
    assert sorted(order.tolist()) == list(range(6)) and order.tolist() != list(range(6))
    assert torch.equal(item["inputs"], order.view(1, 1, 6, 1, 1).expand(2, 3, 6, 4, 4))
    assert torch.equal(shuffled[0]["inputs"], item["inputs"])  # fixed per item
    assert item["path"] == "0.mp4" and len(shuffled) == 2


@pytest.mark.parametrize("argv, message", [(["--epochs", "0"], "--epochs must be >= 1"),
                                           (["--task", "audio"], "invalid choice")])
def test_demo_argument_errors(argv, message, tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path)] + argv) == 2
    assert message in capsys.readouterr().err
