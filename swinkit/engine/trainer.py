"""The training loop: plain PyTorch, one class holding everything a checkpoint must restore.

One optimiser step = ``accum_steps`` micro-batches of ``batch_size`` samples on each of the
``world_size`` processes. The learning rate follows :func:`~swinkit.engine.optim.warmup_cosine_lr`
per step. After every epoch (and every ``save_every_steps`` steps) ``last.pt`` is written
atomically with everything needed to continue bit-for-bit: weights, optimiser, schedule,
GradScaler, EMA, each process's RNG states and the position in the epoch's data order.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from swinkit.data.datasets import make_loader
from swinkit.engine import amp, distributed
from swinkit.engine.config import TrainConfig
from swinkit.engine.curves import plot_curves, write_jsonl
from swinkit.engine.ema import ModelEma
from swinkit.engine.evaluate import evaluate
from swinkit.engine.mixup import Mixup, soft_target_cross_entropy
from swinkit.engine.optim import WarmupCosineSchedule, build_optimizer
from swinkit.engine.sampling import ResumableSampler, ShardSampler
from swinkit.engine.state import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, rng_state, save_atomic,
                                  set_rng_state)


def scaled_learning_rates(cfg: TrainConfig, global_batch: int) -> tuple[float, float, float]:
    """(lr, warmup_lr, min_lr) after the linear scaling rule ``x * global_batch / lr_reference_batch``."""
    if cfg.lr_reference_batch is None:
        return cfg.lr, cfg.warmup_lr, cfg.min_lr
    factor = global_batch / cfg.lr_reference_batch
    if cfg.scale_warmup_min_lr:
        return cfg.lr * factor, cfg.warmup_lr * factor, cfg.min_lr * factor
    return cfg.lr * factor, cfg.warmup_lr, cfg.min_lr


def _is_empty(batch: dict) -> bool:
    return batch["inputs"] is None or batch["inputs"].shape[0] == 0


class EpochMeter:
    """Running sums of one epoch's training loss / accuracy and the samples that could not be read."""

    def __init__(self):
        self.loss_sum, self.correct, self.count = 0.0, 0, 0
        self.skipped: list[tuple[str, str]] = []

    def state_dict(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count,
                "skipped": [list(s) for s in self.skipped]}

    def load_state_dict(self, state: dict) -> None:
        self.loss_sum, self.correct, self.count = state["loss_sum"], state["correct"], state["count"]
        self.skipped = [tuple(s) for s in state["skipped"]]


class Trainer:
    """Train ``model`` on ``train_set`` (items as produced by swinkit.data, batched by ``collate_fn``).

    ``classes``: class names (their count fixes the targets' width). ``model_spec``: how to
    rebuild the model (``{"model_name", "model_config"}``), stored in checkpoints for eval/predict.
    ``on_step(trainer)`` runs after every optimiser step (and its checkpoint, if one is due).
    """

    def __init__(self, cfg: TrainConfig, model: nn.Module, train_set: Dataset, val_set: Dataset | None,
                 classes: list[str], collate_fn: Callable, model_spec: dict | None = None,
                 extra_state: dict | None = None, on_step: Callable[["Trainer"], None] | None = None,
                 log: Callable[[str], None] = print):
        self.cfg = cfg
        self.device = amp.resolve_device(cfg.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device.index if self.device.index is not None else distributed.local_rank())
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.precision = amp.resolve_precision(cfg.precision, self.device)
        self.is_main = distributed.is_main()
        self.world_size, self.rank = distributed.world_size(), distributed.rank()
        self.log = log if self.is_main else (lambda message: None)
        self.on_step = on_step
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.model_spec = model_spec or {}
        self.extra_state = extra_state or {}
        self.output_dir = Path(cfg.output_dir)

        self.model = model.to(self.device)
        if cfg.grad_checkpointing:
            if not hasattr(model, "set_grad_checkpointing"):
                raise ValueError(f"{type(model).__name__} has no set_grad_checkpointing(); "
                                 f"cannot use grad_checkpointing")
            model.set_grad_checkpointing(True)
        self.train_model: nn.Module = self.model
        if distributed.is_distributed():
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=device_ids)

        self._build_data(train_set, val_set, collate_fn)
        self._build_optimisation()

        # Progress.
        self.epoch = 0  # epochs completed
        self.step = 0  # optimiser steps completed (global, over all epochs)
        self.batch_in_epoch = 0  # micro-batches of the current epoch already consumed
        self.meter = EpochMeter()
        self.history: list[dict] = []
        self.best_top1: float | None = None

    def _build_data(self, train_set: Dataset, val_set: Dataset | None, collate_fn: Callable) -> None:
        """Loaders with a fixed order per epoch (the dataset seeds augmentation per epoch and sample)."""
        cfg = self.cfg
        self.train_set = train_set
        self.sampler = ResumableSampler(train_set, num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                        seed=cfg.seed, drop_last=True)
        self.global_batch = cfg.batch_size * cfg.accum_steps * self.world_size
        self.steps_per_epoch = self.sampler.num_samples // cfg.batch_size // cfg.accum_steps
        if self.steps_per_epoch < 1:
            raise ValueError(f"the training split has {len(train_set)} samples, fewer than one optimiser step needs "
                             f"(batch_size {cfg.batch_size} x accum_steps {cfg.accum_steps} x {self.world_size} "
                             f"process(es) = {self.global_batch}); lower --batch-size or --accum-steps")
        # Seeds the DataLoader's worker base seed, so creating a loader never draws from the global RNG.
        self.loader_generator = torch.Generator()
        # workers are not persistent: each epoch's workers take the dataset with that epoch's set_epoch
        self.train_loader = make_loader(train_set, cfg.batch_size, cfg.num_workers, collate_fn, sampler=self.sampler,
                                        drop_last=True, generator=self.loader_generator,
                                        pin_memory=self.device.type == "cuda")
        self.val_loader = None
        if val_set is not None and len(val_set) > 0:
            self.val_loader = make_loader(val_set, cfg.batch_size, cfg.num_workers, collate_fn,
                                          sampler=ShardSampler(len(val_set), self.rank, self.world_size),
                                          generator=torch.Generator().manual_seed(cfg.seed))

    def _build_optimisation(self) -> None:
        """AdamW groups, the schedule over all epochs, GradScaler (fp16), EMA and the target mixer."""
        cfg = self.cfg
        lr, warmup_lr, min_lr = scaled_learning_rates(cfg, self.global_batch)
        self.optimizer = build_optimizer(self.model, lr, cfg.weight_decay, cfg.betas, cfg.eps, cfg.backbone_lr_mult)
        total_steps = self.steps_per_epoch * cfg.epochs
        warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.scheduler = WarmupCosineSchedule(self.optimizer, total_steps, warmup_steps, lr, warmup_lr, min_lr)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.ema = ModelEma(self.model, cfg.ema_decay) if cfg.ema_decay is not None else None
        self.mixup = Mixup(self.num_classes, cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob,
                           cfg.label_smoothing)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """The checkpoint; call on every process (RNG states are gathered from all ranks)."""
        rng_states = distributed.all_gather_object(rng_state())
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            **self.model_spec, **self.extra_state,
            "classes": self.classes, "config": dataclasses.asdict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng_states, "world_size": self.world_size,
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
            "meter": self.meter.state_dict(), "history": self.history, "best_top1": self.best_top1,
        }

    def load_state_dict(self, ckpt: dict) -> None:
        """Continue from a checkpoint written by :meth:`state_dict` (RNG states last)."""
        if ckpt.get("classes") != self.classes:
            raise ValueError(f"the checkpoint was trained on classes {ckpt.get('classes')} but the data has "
                             f"{self.classes}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if ckpt.get("ema") is None:
                raise ValueError("the checkpoint has no EMA weights but ema_decay is set")
            self.ema.load_state_dict(ckpt["ema"])
        self.epoch, self.step, self.batch_in_epoch = ckpt["epoch"], ckpt["step"], ckpt["batch_in_epoch"]
        self.meter.load_state_dict(ckpt["meter"])
        self.history = list(ckpt["history"])
        self.best_top1 = ckpt["best_top1"]
        if ckpt.get("world_size", 1) != self.world_size:
            self.log(f"note: resuming a {ckpt.get('world_size', 1)}-process run on {self.world_size} process(es); "
                     f"the data order and random streams differ from an uninterrupted run")
        states = ckpt["rng"]
        set_rng_state(states[self.rank % len(states)])

    def save(self, name: str = "last.pt") -> Path | None:
        state = self.state_dict()  # collective: every rank takes part
        path = None
        if self.is_main:
            path = save_atomic(state, self.output_dir / name)
        distributed.barrier()
        return path

    # ---------------------------------------------------------------- training
    def _micro_batch(self, batch: dict, sync: bool, num_active: int) -> None:
        inputs = batch["inputs"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        inputs, targets = self.mixup(inputs, labels)
        no_sync = self.train_model.no_sync if isinstance(self.train_model, DistributedDataParallel) and not sync \
            else contextlib.nullcontext
        with no_sync():
            with amp.autocast(self.device, self.precision):
                logits = self.train_model(inputs)
            loss = soft_target_cross_entropy(logits, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at step {self.step}; lower the learning "
                                         f"rate or use --precision fp32")
            scaled = loss / num_active
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        self.meter.loss_sum += float(loss.detach()) * labels.shape[0]
        self.meter.count += labels.shape[0]
        if not self.mixup.enabled:
            self.meter.correct += int((logits.detach().argmax(-1) == labels).sum())

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)

    def train_step(self, batches: list[dict]) -> None:
        """One optimiser step over ``accum_steps`` micro-batches; empty ones (all samples unreadable on
        any process) are left out on every process, so that DistributedDataParallel stays in step."""
        for batch in batches:
            self.meter.skipped.extend(tuple(s) for s in batch.get("skipped", []))
        empty = distributed.all_reduce_sum(torch.tensor([float(_is_empty(b)) for b in batches]))
        active = [b for b, e in zip(batches, empty.tolist()) if e == 0]
        self.model.train()
        for i, batch in enumerate(active):
            self._micro_batch(batch, sync=i == len(active) - 1, num_active=len(active))
        if active:
            self._optimizer_step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self.batch_in_epoch += len(batches)

    def _stop_requested(self) -> bool:
        return self.cfg.stop_after_steps is not None and self.step >= self.cfg.stop_after_steps

    def train_epoch(self, epoch: int) -> bool:
        """Run the rest of epoch ``epoch``; False if stopped early by ``stop_after_steps``."""
        cfg = self.cfg
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch, skip=self.batch_in_epoch * cfg.batch_size)
        self.loader_generator.manual_seed(cfg.seed + epoch)
        remaining_steps = self.steps_per_epoch - self.batch_in_epoch // cfg.accum_steps
        batches = iter(self.train_loader)
        bar = tqdm(total=self.steps_per_epoch, initial=self.steps_per_epoch - remaining_steps,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None if (cfg.progress and self.is_main) else True,
                   leave=False)
        try:
            for _ in range(remaining_steps):
                self.train_step([next(batches) for _ in range(cfg.accum_steps)])
                bar.update(1)
                bar.set_postfix(loss=f"{self.meter.loss_sum / max(self.meter.count, 1):.4f}",
                                lr=f"{self.scheduler.current_lr:.2e}")
                if cfg.save_every_steps and self.step % cfg.save_every_steps == 0:
                    self.save()
                if self.on_step is not None:
                    self.on_step(self)
                if self._stop_requested():
                    if not (cfg.save_every_steps and self.step % cfg.save_every_steps == 0):
                        self.save()
                    return False
        finally:
            bar.close()
            del batches  # shut down loader workers now
        return True

    def _epoch_record(self, epoch: int, seconds: float, val: dict | None) -> dict:
        meter = self.meter
        sums = distributed.all_reduce_sum(torch.tensor([meter.loss_sum, meter.correct, meter.count],
                                                       dtype=torch.float64))
        skipped = [s for rank_list in distributed.all_gather_object(meter.skipped) for s in rank_list]
        count = int(sums[2])
        record = {"epoch": epoch + 1, "step": self.step, "lr": self.scheduler.current_lr,
                  "train_loss": float(sums[0]) / count if count else None,
                  "train_top1": float(sums[1]) / count if count and not self.mixup.enabled else None,
                  "train_samples": int(sums[2]), "epoch_time_s": round(seconds, 3),
                  "skipped": len(skipped), "skipped_samples": [{"path": p, "error": e} for p, e in skipped]}
        if val is not None:
            record.update({f"val_{k}": v for k, v in val.items() if k != "confusion"})
        return record

    def validate(self) -> dict | None:
        if self.val_loader is None:
            return None
        model = self.ema.module if (self.ema is not None and self.cfg.eval_ema) else self.model
        metrics, skipped = evaluate(model, self.val_loader, self.num_classes, self.cfg.average_views,
                                    self.cfg.max_views_per_batch, self.precision,
                                    progress=self.cfg.progress and self.is_main, desc="val")
        metrics["skipped"] = len(skipped)
        return metrics

    def fit(self) -> list[dict]:
        """Train until ``cfg.epochs`` (or ``stop_after_steps``); returns the per-epoch log records."""
        cfg = self.cfg
        self.log(f"training {self.model_spec.get('model_name', type(self.model).__name__)} on "
                 f"{len(self.train_set)} samples, {self.num_classes} classes: {cfg.epochs} epochs x "
                 f"{self.steps_per_epoch} steps, global batch {self.global_batch}, {self.world_size} process(es), "
                 f"{self.device.type} {self.precision}")
        while self.epoch < cfg.epochs:
            epoch = self.epoch
            start = time.perf_counter()
            if not self.train_epoch(epoch):
                self.log(f"stopped after step {self.step} (stop_after_steps); continue with --resume")
                return self.history
            val = self.validate() if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 else None
            record = self._epoch_record(epoch, time.perf_counter() - start, val)
            self.history.append(record)
            self.epoch, self.batch_in_epoch, self.meter = epoch + 1, 0, EpochMeter()
            improved = val is not None and (self.best_top1 is None or val["top1"] > self.best_top1)
            if improved:
                self.best_top1 = val["top1"]
            self.save()
            if improved:
                self.save("best.pt")
            if self.is_main:
                write_jsonl(self.history, self.output_dir / "log.jsonl")
                plot_curves(self.history, self.output_dir / "curves.png")
            self.log(format_record(record))
        return self.history


def format_record(record: dict) -> str:
    """One console line per epoch, naming unreadable samples."""
    parts = [f"epoch {record['epoch']}"]
    if record.get("train_loss") is not None:
        parts.append(f"loss {record['train_loss']:.4f}")
    if record.get("train_top1") is not None:
        parts.append(f"top1 {record['train_top1']:.3f}")
    if record.get("val_top1") is not None:
        parts.append(f"val loss {record['val_loss']:.4f} top1 {record['val_top1']:.3f} top5 {record['val_top5']:.3f}")
    parts.append(f"lr {record['lr']:.2e}")
    parts.append(f"{record['epoch_time_s']:.1f}s")
    line = " | ".join(parts)
    if record["skipped"]:
        names = ", ".join(f"{s['path']} ({s['error']})" for s in record["skipped_samples"][:5])
        more = f" and {record['skipped'] - 5} more" if record["skipped"] > 5 else ""
        line += f"\n  skipped {record['skipped']} unreadable sample(s): {names}{more}"
    return line
