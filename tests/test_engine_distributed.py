"""Two processes (gloo on 127.0.0.1) train to the same weights as one process with the same global batch."""
import os
import socket

import torch
import torch.multiprocessing as mp

from swinkit import create_model
from swinkit.data import collate
from swinkit.engine import distributed
from swinkit.engine.config import TrainConfig
from swinkit.engine.trainer import Trainer
from test_engine_resume import TensorClips

# No per-process randomness (drop path, dropout, mixing), so the two runs see the same computation.
RECIPE = dict(epochs=2, accum_steps=2, lr=2e-3, warmup_epochs=0.5, num_workers=0, progress=False, seed=3,
              clip_grad=1.0, label_smoothing=0.1)


def initial_model(seed: int):
    torch.manual_seed(seed)
    return create_model("video_swin_t", embed_dim=8, depths=(1, 1), num_heads=(1, 1), window_size=(2, 2, 2),
                        num_classes=3, drop_path_rate=0.0, head_drop_rate=0.0)


def run(cfg: TrainConfig) -> Trainer:
    """What ``swinkit train`` does for each process: join torchrun's group from the environment, train."""
    distributed.init_from_env(torch.device("cpu"))
    model = initial_model(cfg.seed)
    train_set = TensorClips(16)
    trainer = Trainer(cfg, model, train_set, TensorClips(7, seed=1), train_set.classes, collate,
                      log=lambda message: None)
    trainer.fit()
    return trainer


def worker(rank: int, port: int, cfg: TrainConfig, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        trainer = run(cfg)
        if rank == 0:
            torch.save({"model": trainer.model.state_dict(), "history": trainer.history,
                        "world_size": trainer.world_size}, out)
    finally:
        distributed.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    two_dir, one_dir = tmp_path / "two", tmp_path / "one"
    result = tmp_path / "rank0.pt"
    mp.spawn(worker, args=(free_port(), TrainConfig(**RECIPE, batch_size=2, output_dir=str(two_dir)), str(result)),
             nprocs=2)
    two = torch.load(result, weights_only=True)
    assert two["world_size"] == 2

    single = run(TrainConfig(**RECIPE, batch_size=4, output_dir=str(one_dir)))
    assert single.world_size == 1 and single.global_batch == 8
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(two["model"][name], value, atol=1e-5, rtol=1e-4, msg=name)
    start = initial_model(RECIPE["seed"]).state_dict()
    # training moved the weights, so the comparison above means something
    assert not torch.allclose(single.model.state_dict()["head.fc.weight"], start["head.fc.weight"], atol=1e-4)
    # metrics reduced over both ranks: the 7 validation clips are split 4 + 3 and counted once each
    for ours, theirs in zip(single.history, two["history"]):
        assert theirs["val_count"] == ours["val_count"] == 7
        assert theirs["train_samples"] == ours["train_samples"] == 16
        assert abs(theirs["train_loss"] - ours["train_loss"]) < 1e-5
        assert theirs["val_top1"] == ours["val_top1"]
    # rank 0 alone wrote the checkpoint and the log
    assert sorted(p.name for p in two_dir.iterdir()) == ["best.pt", "curves.png", "last.pt", "log.jsonl"]

