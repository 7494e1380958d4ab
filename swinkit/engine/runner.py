"""From a :class:`TrainConfig` (or a checkpoint) to models, datasets and finished runs.

These are the functions the command line calls; they are usable from Python as well::

    from swinkit.engine import TrainConfig, train
    trainer = train(TrainConfig(model="video_swin_t", data_root="data/", epochs=10))
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from swinkit.engine import amp, distributed
from swinkit.engine.config import TrainConfig
from swinkit.engine.trainer import Trainer


def build_model(name: str, num_classes: int, model_kwargs: dict | None = None, drop_path_rate: float | None = None,
                pretrained: str | None = None, log: Callable[[str], None] = print) -> nn.Module:
    """``swinkit.create_model(name, num_classes=..., **model_kwargs)``, optionally initialised from
    ``pretrained`` (any layout ``swinkit.load_checkpoint`` reads; a classifier of another size is
    left freshly initialised)."""
    from swinkit import create_model, load_checkpoint

    kwargs = dict(model_kwargs or {})
    if "num_classes" in kwargs:
        raise ValueError("num_classes is set by the data (its class list); remove it from model_kwargs")
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    model = create_model(name, num_classes=num_classes, **kwargs)
    if pretrained:
        report = load_checkpoint(model, pretrained, strict=False)
        head = tuple(getattr(model, "head_prefixes", ("head.",)))
        problems = [k for k in report.missing + report.unexpected + [m[0] for m in report.mismatched]
                    if not k.startswith(head)]
        if problems:
            raise ValueError(f"pretrained weights {pretrained} do not fit {name} (besides the classifier): "
                             f"{', '.join(problems[:6])}{' ...' if len(problems) > 6 else ''}")
        kept_head = [m[0] for m in report.mismatched] + report.missing
        log(f"initialised from {pretrained} ({report.source_format}, {len(report.loaded)} tensors"
            f"{'; new classifier' if kept_head else ''})")
    return model


def model_spec(model: nn.Module, name: str) -> dict:
    """What a checkpoint needs to rebuild ``model``: its registry name and full config."""
    return {"model_name": name, "model_config": dataclasses.asdict(model.config)}


def rebuild_model(ckpt: dict, use_ema: bool = False) -> nn.Module:
    """The trained model of a training checkpoint, in eval mode (EMA weights with ``use_ema``)."""
    from swinkit import create_model

    model = create_model(ckpt["model_name"], **ckpt["model_config"])
    if use_ema:
        if ckpt.get("ema") is None:
            raise ValueError("this checkpoint has no EMA weights (it was trained without --ema-decay)")
        model.load_state_dict(ckpt["ema"]["module"])
    else:
        model.load_state_dict(ckpt["model"])
    return model.eval()


def build_datasets(cfg: TrainConfig):
    """(train set, val set or None, class names, kind) of ``cfg.data_root``."""
    from swinkit.data import build_dataset, find_samples

    if cfg.data_root is None:
        raise ValueError("no training data: set data_root (--data-root)")
    train_set = build_dataset(cfg.data_root, cfg.train_list, kind=cfg.kind, split="train", seed=cfg.seed,
                              **cfg.data_options)
    classes = list(train_set.classes)
    val_set = None
    root = Path(cfg.data_root)
    has_val = cfg.val_list is not None or (root / "val.txt").is_file() or (root / "val").is_dir()
    # An empty validation split (e.g. make-dataset --num-val 0) means: train without validation.
    if has_val and find_samples(root, cfg.val_list, "val", train_set.kind, classes)[0]:
        val_set = build_dataset(cfg.data_root, cfg.val_list, kind=train_set.kind, split="val", classes=classes,
                                seed=cfg.seed, **cfg.data_options)
    return train_set, val_set, classes, train_set.kind


def train(cfg: TrainConfig, resume: dict | None = None, on_step: Callable[[Trainer], None] | None = None,
          log: Callable[[str], None] = print) -> Trainer:
    """Train with ``cfg`` (joining torchrun's process group when WORLD_SIZE > 1).

    ``resume``: a checkpoint dict from :func:`~swinkit.engine.state.load_training_checkpoint`; the
    run continues where it stopped and ends with the same weights as an uninterrupted one.
    """
    from swinkit.data import collate

    distributed.init_from_env(amp.resolve_device(cfg.device))
    train_set, val_set, classes, kind = build_datasets(cfg)
    torch.manual_seed(cfg.seed)  # the weights depend only on the seed
    model = build_model(cfg.model, len(classes), cfg.model_kwargs, cfg.drop_path_rate,
                        None if resume else cfg.pretrained, log=log if distributed.is_main() else lambda m: None)
    torch.manual_seed(cfg.seed + distributed.rank())  # dropout / drop-path / mixing differ per process
    extra = {"kind": kind, "data_options": dict(cfg.data_options)}
    trainer = Trainer(cfg, model, train_set, val_set, classes, collate, model_spec(model, cfg.model),
                      extra_state=extra, on_step=on_step, log=log)
    if resume is not None:
        trainer.load_state_dict(resume)
        log(f"resumed at epoch {trainer.epoch + 1}, step {trainer.step}")
    trainer.fit()
    return trainer
