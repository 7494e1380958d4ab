"""Trainer switches: mixed precision, gradient checkpointing, EMA, unreadable samples, bad setups."""
import pytest
import torch

from swinkit.data import collate
from swinkit.engine.amp import resolve_precision
from swinkit.engine.config import TrainConfig
from swinkit.engine.ema import ModelEma
from swinkit.engine.trainer import Trainer
from test_engine_resume import TensorClips, tiny_model

BASE = dict(epochs=1, batch_size=4, lr=2e-3, warmup_epochs=0, num_workers=0, progress=False, seed=1, eval_every=0)


def trainer_for(tmp_path, train_set=None, **overrides) -> Trainer:
    torch.manual_seed(0)
    train_set = train_set or TensorClips(8)
    cfg = TrainConfig(**{**BASE, **overrides}, output_dir=str(tmp_path))
    return Trainer(cfg, tiny_model(drop_path_rate=0.0), train_set, None, TensorClips().classes, collate,
                   log=lambda message: None)


def test_bf16_autocast_trains_on_cpu_and_amp_means_bf16_there(tmp_path):
    assert resolve_precision("amp", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))
    trainer = trainer_for(tmp_path, precision="bf16")
    start = trainer.model.head.fc.weight.detach().clone()
    history = trainer.fit()
    assert trainer.precision == "bf16" and trainer.scaler is None
    assert torch.isfinite(torch.tensor(history[0]["train_loss"]))
    assert trainer.model.head.fc.weight.dtype == torch.float32  # weights stay fp32
    assert not torch.equal(trainer.model.head.fc.weight, start)


def test_gradient_checkpointing_gives_the_same_training(tmp_path):
    plain = trainer_for(tmp_path / "plain")
    plain.fit()
    checkpointed = trainer_for(tmp_path / "ckpt", grad_checkpointing=True)
    assert all(stage.grad_checkpointing for stage in checkpointed.model.layers)
    checkpointed.fit()
    for name, value in plain.model.state_dict().items():
        torch.testing.assert_close(checkpointed.model.state_dict()[name], value, atol=1e-6, rtol=1e-5, msg=name)


def test_ema_update_rule():
    model = torch.nn.Linear(2, 1)
    ema = ModelEma(model, decay=0.75)
    with torch.no_grad():
        model.weight.add_(4.0)
    expected = ema.module.weight + 0.25 * 4.0
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, expected)
    assert not ema.module.weight.requires_grad and not ema.module.training


def test_ema_weights_are_validated_and_saved_when_asked(tmp_path):
    trainer = trainer_for(tmp_path, ema_decay=0.5, eval_ema=True, eval_every=1)
    trainer.val_loader = trainer.train_loader  # any labelled data will do
    trainer.fit()
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["ema"]["decay"] == 0.5
    assert not torch.equal(ckpt["ema"]["module"]["head.fc.weight"], ckpt["model"]["head.fc.weight"])


class Unreadable(TensorClips):
    """Items below ``broken`` cannot be read."""

    def __init__(self, num_items: int, broken: int):
        super().__init__(num_items)
        self.broken = broken

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if index < self.broken:
            item.update(inputs=None, error="OSError: truncated file")
        return item


def test_unreadable_samples_are_counted_and_named(tmp_path):
    record = trainer_for(tmp_path, train_set=Unreadable(8, broken=4)).fit()[0]
    assert record["skipped"] == 4 and record["train_samples"] == 4
    assert sorted(s["path"] for s in record["skipped_samples"]) == [f"clip{i}.mp4" for i in range(4)]
    assert all(s["error"] == "OSError: truncated file" for s in record["skipped_samples"])


def test_a_batch_without_readable_samples_is_left_out(tmp_path):
    trainer = trainer_for(tmp_path, train_set=Unreadable(8, broken=8))
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    record = trainer.fit()[0]
    assert record["skipped"] == 8 and record["train_samples"] == 0 and record["train_loss"] is None
    assert trainer.step == 2  # the schedule still advances
    assert all(torch.equal(start[k], v) for k, v in trainer.model.state_dict().items())


def test_setup_errors(tmp_path):
    with pytest.raises(ValueError, match="fewer than one optimiser step"):
        trainer_for(tmp_path, batch_size=4, accum_steps=4)
    trainer = trainer_for(tmp_path)
    trainer.fit()
    other = trainer_for(tmp_path)
    other.classes = ["x", "y", "z"]
    with pytest.raises(ValueError, match="trained on classes"):
        other.load_state_dict(torch.load(tmp_path / "last.pt", weights_only=True))
