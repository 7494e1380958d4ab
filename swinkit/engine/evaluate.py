"""Evaluation: single- and multi-view (clips x crops) testing with chunked forwards."""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm import tqdm

from swinkit.engine import amp
from swinkit.engine.metrics import MetricAccumulator, average_views, score_loss


def num_spatial_dims(model: nn.Module) -> int:
    """3 for video models (B, C, T, H, W), 2 for image models (B, C, H, W)."""
    family = getattr(model, "family", None)
    if family is None:
        raise ValueError("the model has no 'family' attribute; expected a swinkit model")
    return 3 if family == "video_swin" else 2


def forward_views(model: nn.Module, inputs: torch.Tensor, max_views_per_batch: int,
                  spatial_dims: int) -> torch.Tensor:
    """Per-view logits (B, V, K) of ``inputs`` (B, V, C, *spatial) or a single view (B, C, *spatial).

    The B * V views go through the model ``max_views_per_batch`` at a time (memory bound), the
    way the official ``max_testing_views`` does; the result does not depend on the chunk size.
    """
    if max_views_per_batch < 1:
        raise ValueError(f"max_views_per_batch must be >= 1, got {max_views_per_batch}")
    if inputs.ndim == spatial_dims + 2:
        inputs = inputs.unsqueeze(1)
    if inputs.ndim != spatial_dims + 3:
        raise ValueError(f"expected inputs (B, V, C, {'T, ' if spatial_dims == 3 else ''}H, W) or a single view, "
                         f"got shape {tuple(inputs.shape)}")
    batch, views = inputs.shape[:2]
    flat = inputs.flatten(0, 1)
    logits = torch.cat([model(chunk) for chunk in flat.split(max_views_per_batch)])
    return logits.float().view(batch, views, -1)


@torch.no_grad()
def predict_scores(model: nn.Module, inputs: torch.Tensor, average: str = "prob", max_views_per_batch: int = 4,
                   precision: str = "fp32") -> torch.Tensor:
    """View-averaged scores (B, K) -- probabilities for 'prob', logits for 'score'."""
    spatial_dims = num_spatial_dims(model)
    device = next(model.parameters()).device
    with amp.autocast(device, precision):
        logits = forward_views(model, inputs.to(device), max_views_per_batch, spatial_dims)
    return average_views(logits, average)


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, average: str = "prob", max_views_per_batch: int = 4,
             precision: str = "fp32", progress: bool = False, desc: str = "eval") -> tuple[dict, list]:
    """Top-1, top-5, mean class accuracy, loss and confusion matrix over ``loader``.

    Returns ``(metrics, skipped)``: metrics holds floats plus ``confusion`` (K, K) (rows = true
    class), summed over all processes; skipped lists this process's (path, error) of unreadable
    samples.
    """
    was_training = model.training
    model.eval()
    meter = MetricAccumulator(num_classes)
    skipped: list = []
    for batch in tqdm(loader, desc=desc, disable=None if progress else True, leave=False):
        skipped.extend(batch.get("skipped", []))
        inputs = batch["inputs"]
        if inputs is None or inputs.shape[0] == 0:
            continue
        labels = batch["labels"]
        scores = predict_scores(model, inputs, average, max_views_per_batch, precision).cpu()
        meter.update(scores, labels, float(score_loss(scores, labels, average)))
    meter.all_reduce()
    model.train(was_training)
    metrics = meter.result()
    metrics["confusion"] = meter.confusion
    return metrics, skipped
