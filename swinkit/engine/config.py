"""Training configuration: one dataclass, presets are instances of it.

Precedence when a run is configured: preset (or the config stored in a checkpoint being
resumed) < YAML file < explicit command-line options. Every field has a ``help`` text; the
command line is generated from these fields (``--batch-size`` sets ``batch_size``).
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRECISIONS = ("fp32", "bf16", "fp16", "amp")
VIEW_AVERAGING = ("prob", "score")


def _opt(default, help: str, **kwargs):
    """A dataclass field carrying its command-line help text."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data on disk."""

    # model
    model: str = _opt("video_swin_t", "registered model name (swinkit models list)")
    model_kwargs: dict = _opt({}, "constructor overrides as YAML, e.g. '{embed_dim: 32, depths: [1, 1, 2, 1]}'")
    drop_path_rate: float | None = _opt(None, "stochastic depth rate passed to the model (None: model default)")
    pretrained: str | None = _opt(None, "initial weights (any format swinkit.load_checkpoint reads); head is reset")
    grad_checkpointing: bool = _opt(False, "recompute block activations in backward (model.set_grad_checkpointing)")
    # data
    data_root: str | None = _opt(None, "dataset root folder (videos or images)")
    train_list: str | None = _opt(None, "annotation file of the training split (default: found by the data pipeline)")
    val_list: str | None = _opt(None, "annotation file of the validation split")
    kind: str | None = _opt(None, "'video' or 'image' (None: detected by the data pipeline)")
    data_options: dict = _opt({}, "transform options for swinkit.data.build_dataset as YAML, e.g. '{clip_len: 8}'")
    num_workers: int = _opt(2, "data-loading worker processes per training process")
    # optimisation
    epochs: int = _opt(30, "number of epochs")
    batch_size: int = _opt(8, "samples per micro-batch and process")
    accum_steps: int = _opt(1, "micro-batches accumulated per optimiser step")
    lr: float = _opt(1e-3, "peak learning rate (after warmup)")
    warmup_lr: float = _opt(1e-4, "learning rate at step 0, rising linearly to lr")
    min_lr: float = _opt(0.0, "learning rate at the end of the cosine decay")
    warmup_epochs: float = _opt(2.5, "length of the linear warmup in epochs (may be fractional)")
    lr_reference_batch: int | None = _opt(None, "scale lr by global_batch / this (None: no scaling)")
    scale_warmup_min_lr: bool = _opt(True, "with lr_reference_batch, also scale warmup_lr and min_lr")
    weight_decay: float = _opt(0.02, "AdamW weight decay (0 for norms, biases, 1-D params, position tables)")
    betas: tuple[float, float] = _opt((0.9, 0.999), "AdamW betas, e.g. '[0.9, 0.999]'")
    eps: float = _opt(1e-8, "AdamW epsilon")
    backbone_lr_mult: float = _opt(1.0, "learning-rate multiplier for every parameter outside the head")
    clip_grad: float | None = _opt(None, "clip the global gradient norm to this value (None: off)")
    label_smoothing: float = _opt(0.0, "label smoothing of the (soft) targets")
    mixup: float = _opt(0.0, "mixup Beta(alpha, alpha); 0 disables")
    cutmix: float = _opt(0.0, "cutmix Beta(alpha, alpha); 0 disables")
    mixup_prob: float = _opt(1.0, "probability of mixing a batch when mixup or cutmix is on")
    mixup_switch_prob: float = _opt(0.5, "probability of cutmix instead of mixup when both are on")
    precision: str = _opt("fp32", "fp32 | bf16 (autocast) | fp16 (autocast + GradScaler, GPU only) | "
                                  "amp (fp16 on GPU, bf16 on CPU)", choices=PRECISIONS)
    ema_decay: float | None = _opt(None, "keep an exponential moving average of the weights (e.g. 0.9998)")
    seed: int = _opt(0, "seed of weights, data order, augmentation and mixing")
    device: str = _opt("auto", "'auto' (GPU when available), 'cpu' or 'cuda'")
    # evaluation
    average_views: str = _opt("prob", "multi-view testing: average softmax 'prob' or logits 'score'",
                              choices=VIEW_AVERAGING)
    max_views_per_batch: int = _opt(4, "views sent through the model at once in multi-view testing")
    eval_every: int = _opt(1, "validate every this many epochs (0: never)")
    eval_ema: bool = _opt(False, "validate and save the EMA weights as the final model")
    # output
    output_dir: str = _opt("runs/train", "folder for checkpoints, log.jsonl and curves.png")
    save_every_steps: int = _opt(0, "also checkpoint every this many optimiser steps (0: only per epoch)")
    stop_after_steps: int | None = _opt(None, "end this run after this global step, checkpointing it; the "
                                               "schedule still spans all epochs (continue with --resume)")
    progress: bool = _opt(True, "show progress bars")

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        validate(self)


def validate(cfg: TrainConfig) -> None:
    """Raise ValueError naming the first option outside its range."""
    positive = ("epochs", "batch_size", "accum_steps", "max_views_per_batch")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    non_negative = ("lr", "warmup_lr", "min_lr", "warmup_epochs", "weight_decay", "label_smoothing", "mixup",
                    "cutmix", "num_workers", "eval_every", "save_every_steps")
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    if cfg.average_views not in VIEW_AVERAGING:
        raise ValueError(f"average_views must be one of {VIEW_AVERAGING}, got {cfg.average_views!r}")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {cfg.device!r}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    for name in ("mixup_prob", "mixup_switch_prob"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    if cfg.ema_decay is not None and not 0.0 < cfg.ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got {cfg.ema_decay}")
    if cfg.eval_ema and cfg.ema_decay is None:
        raise ValueError("eval_ema needs ema_decay to be set")
    if cfg.clip_grad is not None and cfg.clip_grad <= 0:
        raise ValueError(f"clip_grad must be > 0 (or None), got {cfg.clip_grad}")
    if cfg.lr_reference_batch is not None and cfg.lr_reference_batch < 1:
        raise ValueError(f"lr_reference_batch must be >= 1, got {cfg.lr_reference_batch}")
    if cfg.stop_after_steps is not None and cfg.stop_after_steps < 1:
        raise ValueError(f"stop_after_steps must be >= 1, got {cfg.stop_after_steps}")
    if len(cfg.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {cfg.betas}")
    if cfg.kind not in (None, "video", "image"):
        raise ValueError(f"kind must be 'video', 'image' or None, got {cfg.kind!r}")


def config_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def base_type(annotation) -> type:
    """``float | None`` -> float, ``tuple[float, float]`` -> tuple, ``dict`` -> dict."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return base_type(args[0])
    return typing.get_origin(annotation) or annotation


def coerce(name: str, value: Any) -> Any:
    """Convert a YAML / command-line value to the type of field ``name`` (ValueError if impossible)."""
    fields = config_fields()
    if name not in fields:
        raise ValueError(f"unknown training option {name!r}; expected one of {', '.join(fields)}")
    annotation = field_types()[name]
    if isinstance(value, str):
        if value.strip().lower() in ("none", "null") and type(None) in typing.get_args(annotation):
            return None
    if value is None:
        if type(None) in typing.get_args(annotation):
            return None
        raise ValueError(f"option {name} cannot be None")
    kind = base_type(annotation)
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return lowered in ("true", "1", "yes")
            return bool(value)
        if kind in (dict, tuple, list):
            parsed = yaml.safe_load(value) if isinstance(value, str) else value
            if parsed is None and kind is dict:
                parsed = {}
            if not isinstance(parsed, (dict,) if kind is dict else (list, tuple)):
                raise ValueError(value)
            return dict(parsed) if kind is dict else tuple(parsed)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        return kind(value)
    except (ValueError, TypeError, yaml.YAMLError):
        raise ValueError(f"option {name} expects {_describe(annotation)}, got {value!r}") from None


def _describe(annotation) -> str:
    kind = base_type(annotation)
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             dict: "a YAML mapping such as '{key: value}'", tuple: "a YAML list such as '[a, b]'"}
    return names.get(kind, str(annotation))


def merge(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A new config with ``overrides`` (field name -> raw value) applied and validated."""
    values = {name: coerce(name, value) for name, value in overrides.items()}
    return dataclasses.replace(cfg, **values)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file of ``field: value`` pairs (keys may use '-' or '_')."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of option: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved with ``dataclasses.asdict`` (unknown keys are an error)."""
    return merge(TrainConfig(), values)


# ---------------------------------------------------------------------------------------------
# Presets: the official recipes of models.md section 9, for 8 GPUs (batch_size is per process).

PRESETS: dict[str, TrainConfig] = {
    # Video Swin-T on Kinetics-400 (0.x configs): 8 GPUs x 2 clips x 4 accumulation = 64 clips/step.
    # Parameter groups follow mmaction2 1.x (norms and tables: no decay; backbone lr x0.1).
    "video_swin_k400_t": TrainConfig(
        model="video_swin_t", drop_path_rate=0.1, kind="video",
        data_options={"clip_len": 32, "frame_interval": 2, "size": 224, "test_clips": 4, "test_crops": 3},
        epochs=30, batch_size=2, accum_steps=4, lr=1e-3, warmup_lr=1e-4, min_lr=0.0, warmup_epochs=2.5,
        weight_decay=0.02, backbone_lr_mult=0.1, clip_grad=None, label_smoothing=0.0, precision="amp",
        average_views="prob", max_views_per_batch=4),
    # Microsoft Swin-T on ImageNet-1K from scratch: 8 GPUs x 128, lrs scaled by global batch / 512.
    "swin_imagenet_t": TrainConfig(
        model="swin_t", drop_path_rate=0.2, kind="image", data_options={"size": 224},
        epochs=300, batch_size=128, lr=5e-4, warmup_lr=5e-7, min_lr=5e-6, warmup_epochs=20,
        lr_reference_batch=512, scale_warmup_min_lr=True, weight_decay=0.05, clip_grad=5.0,
        label_smoothing=0.1, mixup=0.8, cutmix=1.0, mixup_prob=1.0, mixup_switch_prob=0.5, precision="amp"),
    # Shunted-T (DeiT-style main.py): 8 GPUs x 128, only the peak lr scaled by global batch / 512.
    "shunted_imagenet_t": TrainConfig(
        model="shunted_t", drop_path_rate=0.1, kind="image", data_options={"size": 224},
        epochs=300, batch_size=128, lr=5e-4, warmup_lr=1e-6, min_lr=1e-5, warmup_epochs=5,
        lr_reference_batch=512, scale_warmup_min_lr=False, weight_decay=0.05, clip_grad=None,
        label_smoothing=0.1, mixup=0.8, cutmix=1.0, mixup_prob=1.0, mixup_switch_prob=0.5, precision="amp"),
}


def preset(name: str) -> TrainConfig:
    """A copy of the preset ``name`` (ValueError listing the known names otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])
