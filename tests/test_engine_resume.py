"""Checkpointing: a run killed and resumed ends with bit-identical weights to an uninterrupted run."""
import dataclasses
import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from swinkit import create_model
from swinkit.data import collate
from swinkit.engine.config import TrainConfig
from swinkit.engine.state import load_training_checkpoint, rng_state, save_atomic, set_rng_state
from swinkit.engine.trainer import Trainer


class TensorClips(Dataset):
    """Tiny random clips (3, 4, 16, 16) whose mean encodes the label, with per-(epoch, item) noise."""

    def __init__(self, num_items: int = 16, num_classes: int = 3, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(num_items) % num_classes
        self.clips = torch.randn(num_items, 3, 4, 16, 16, generator=generator) + self.labels.view(-1, 1, 1, 1, 1)
        self.classes = [f"class{i}" for i in range(num_classes)]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        noise = torch.randn(self.clips[index].shape, generator=torch.Generator().manual_seed(self.epoch * 1000 + index))
        return {"inputs": self.clips[index] + 0.1 * noise, "label": int(self.labels[index]), "index": index,
                "path": f"clip{index}.mp4", "error": None}


def tiny_model(drop_path_rate: float = 0.1):
    return create_model("video_swin_t", embed_dim=8, depths=(1, 1), num_heads=(1, 1), window_size=(2, 2, 2),
                        num_classes=3, drop_path_rate=drop_path_rate)


def make_trainer(cfg: TrainConfig, on_step=None) -> Trainer:
    torch.manual_seed(cfg.seed)
    train_set = TensorClips()
    return Trainer(cfg, tiny_model(), train_set, TensorClips(6, seed=1), train_set.classes, collate,
                   {"model_name": "video_swin_t"}, on_step=on_step, log=lambda message: None)


# Every random element at once: drop path, head dropout, mixup/cutmix, EMA, clipping, accumulation.
RECIPE = dict(epochs=3, batch_size=4, accum_steps=2, lr=2e-3, warmup_epochs=0.5, num_workers=0, progress=False,
              ema_decay=0.9, mixup=0.8, cutmix=1.0, label_smoothing=0.1, clip_grad=1.0, seed=7)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    trainer = make_trainer(TrainConfig(**RECIPE, output_dir=str(tmp_path_factory.mktemp("full"))))
    trainer.fit()
    return trainer


def assert_same_run(expected: Trainer, resumed: Trainer) -> None:
    for name, value in expected.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for name, value in expected.ema.module.state_dict().items():
        assert torch.equal(value, resumed.ema.module.state_dict()[name]), f"ema {name}"
    first, second = expected.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(first[i]["exp_avg_sq"], second[i]["exp_avg_sq"]) for i in first)
    strip = [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in expected.history]
    assert strip == [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in resumed.history]
    assert resumed.step == expected.step == 3 * expected.steps_per_epoch


def test_stop_mid_epoch_then_resume_is_bitwise_identical(uninterrupted, tmp_path):
    stopped = make_trainer(TrainConfig(**RECIPE, output_dir=str(tmp_path), stop_after_steps=3))
    stopped.fit()
    assert (stopped.epoch, stopped.step, stopped.batch_in_epoch) == (1, 3, 2)  # 2 steps per epoch: mid-epoch 2
    assert not any(torch.equal(v, uninterrupted.model.state_dict()[k]) for k, v in stopped.model.state_dict().items()
                   if v.is_floating_point() and "relative_position_index" not in k)
    resumed = make_trainer(TrainConfig(**RECIPE, output_dir=str(tmp_path)))
    resumed.load_state_dict(load_training_checkpoint(tmp_path / "last.pt"))
    resumed.fit()
    assert_same_run(uninterrupted, resumed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "curves.png", "last.pt", "log.jsonl"]


class Killed(Exception):
    pass


def test_crash_after_a_step_checkpoint_then_resume_is_bitwise_identical(uninterrupted, tmp_path):
    def kill_at_step_4(trainer):
        if trainer.step == 4:
            raise Killed

    crashing = make_trainer(TrainConfig(**RECIPE, output_dir=str(tmp_path), save_every_steps=1), kill_at_step_4)
    with pytest.raises(Killed):
        crashing.fit()
    ckpt = load_training_checkpoint(tmp_path)  # a folder means its last.pt
    assert (ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]) == (4, 1, 4)  # end of epoch 2, not yet logged
    assert len(ckpt["history"]) == 1
    resumed = make_trainer(TrainConfig(**RECIPE, output_dir=str(tmp_path)))
    resumed.load_state_dict(ckpt)
    resumed.fit()
    assert_same_run(uninterrupted, resumed)


def test_checkpoint_contents(uninterrupted):
    ckpt = load_training_checkpoint(uninterrupted.output_dir / "last.pt")
    for key in ("model", "optimizer", "scheduler", "ema", "rng", "config", "classes", "epoch", "step", "meter"):
        assert key in ckpt, key
    assert ckpt["config"] == dataclasses.asdict(uninterrupted.cfg)
    assert set(ckpt["rng"][0]) >= {"python", "numpy", "torch"}
    assert ckpt["scheduler"] == {"step_count": 6} and ckpt["epoch"] == 3


def test_rng_state_round_trip(tmp_path):
    state = rng_state()
    save_atomic({"rng": state}, tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_atomic_save_leaves_no_partial_file(tmp_path):
    target = tmp_path / "last.pt"
    save_atomic({"a": torch.ones(2)}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic({"a": Unpicklable()}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))  # old content intact


def test_loading_a_foreign_file_is_a_clear_error(tmp_path):
    torch.save({"model": {"w": torch.ones(1)}}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="not a swinkit training checkpoint"):
        load_training_checkpoint(tmp_path / "weights.pt")
    with pytest.raises(FileNotFoundError):
        load_training_checkpoint(tmp_path / "missing.pt")
