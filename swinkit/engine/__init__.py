"""Training, evaluation, prediction and feature extraction (plain PyTorch, single process or torchrun)."""
from swinkit.engine.config import PRESETS, TrainConfig, preset
from swinkit.engine.evaluate import evaluate, forward_views, predict_scores
from swinkit.engine.inference import extract_features, predict, save_features
from swinkit.engine.metrics import average_views, confusion_matrix, mean_class_accuracy, topk_correct
from swinkit.engine.mixup import Mixup, smooth_one_hot, soft_target_cross_entropy
from swinkit.engine.optim import WarmupCosineSchedule, build_optimizer, param_groups, warmup_cosine_lr
from swinkit.engine.runner import build_datasets, build_model, rebuild_model, train
from swinkit.engine.state import load_training_checkpoint, save_atomic
from swinkit.engine.trainer import Trainer

__all__ = [
    "PRESETS", "TrainConfig", "preset",
    "evaluate", "forward_views", "predict_scores",
    "extract_features", "predict", "save_features",
    "average_views", "confusion_matrix", "mean_class_accuracy", "topk_correct",
    "Mixup", "smooth_one_hot", "soft_target_cross_entropy",
    "WarmupCosineSchedule", "build_optimizer", "param_groups", "warmup_cosine_lr",
    "build_datasets", "build_model", "rebuild_model", "train",
    "load_training_checkpoint", "save_atomic",
    "Trainer",
]
