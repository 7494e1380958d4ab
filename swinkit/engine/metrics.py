"""Classification metrics and multi-view averaging: pure functions of logits and labels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from swinkit.engine import distributed


def average_views(logits: torch.Tensor, mode: str = "prob") -> torch.Tensor:
    """Combine per-view logits (B, V, K) -- or (V, K) for one sample -- into one score per class (B, K).

    ``'prob'``: softmax over classes per view, then the mean over views (what the official
    Video Swin test configs use); ``'score'``: the mean of the logits. The order of views does
    not matter.
    """
    if logits.ndim == 2:
        logits = logits.unsqueeze(0)
    if logits.ndim != 3:
        raise ValueError(f"expected per-view logits of shape (B, V, K) or (V, K), got {tuple(logits.shape)}")
    if mode == "prob":
        return F.softmax(logits, dim=-1).mean(dim=1)
    if mode == "score":
        return logits.mean(dim=1)
    raise ValueError(f"view averaging must be 'prob' or 'score', got {mode!r}")


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    """How many rows of ``scores`` (N, K) have their label among the ``k`` highest entries."""
    k = min(k, scores.shape[-1])
    top = scores.topk(k, dim=-1).indices
    return int((top == labels.view(-1, 1)).any(dim=-1).sum())


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts; row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat.cpu(), minlength=num_classes * num_classes).view(num_classes, num_classes)


def mean_class_accuracy(confusion: torch.Tensor) -> float:
    """Mean over the classes that occur (non-empty rows) of their recall."""
    per_class = per_class_accuracy(confusion)
    present = confusion.sum(dim=1) > 0
    return float(per_class[present].mean()) if present.any() else 0.0


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """(K,) recall per class (0 for classes without samples)."""
    totals = confusion.sum(dim=1).double()
    return torch.where(totals > 0, confusion.diag().double() / totals.clamp(min=1), torch.zeros_like(totals))


def score_loss(scores: torch.Tensor, labels: torch.Tensor, mode: str) -> torch.Tensor:
    """Summed loss of averaged scores: -log(mean prob) for 'prob', cross-entropy for 'score'."""
    if mode == "prob":
        return F.nll_loss(scores.clamp(min=1e-12).log(), labels, reduction="sum")
    return F.cross_entropy(scores, labels, reduction="sum")


class MetricAccumulator:
    """Running sums for top-1 / top-5 / mean class accuracy / loss, reducible across processes."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.top5_hits = 0
        self.loss_sum = 0.0
        self.count = 0

    def update(self, scores: torch.Tensor, labels: torch.Tensor, loss_sum: float) -> None:
        """scores (N, K) averaged over views, labels (N,), loss summed over the N samples."""
        scores, labels = scores.detach().float().cpu(), labels.cpu()
        self.confusion += confusion_matrix(scores.argmax(dim=-1), labels, self.num_classes)
        self.top5_hits += topk_correct(scores, labels, 5)
        self.loss_sum += float(loss_sum)
        self.count += int(labels.numel())

    def all_reduce(self) -> None:
        """Sum the counts of every process (no-op without torch.distributed)."""
        if not distributed.is_distributed():
            return
        sums = torch.tensor([self.top5_hits, self.loss_sum, self.count], dtype=torch.float64)
        self.confusion = distributed.all_reduce_sum(self.confusion)
        sums = distributed.all_reduce_sum(sums)
        self.top5_hits, self.loss_sum, self.count = int(sums[0]), float(sums[1]), int(sums[2])

    def result(self) -> dict:
        count = max(self.count, 1)
        return {"loss": self.loss_sum / count, "top1": float(self.confusion.diag().sum()) / count,
                "top5": self.top5_hits / count, "mean_class_acc": mean_class_accuracy(self.confusion),
                "count": self.count}
