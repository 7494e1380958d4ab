"""Soft targets: label smoothing, mixup and cutmix for images (B, C, H, W) and videos (B, C, T, H, W).

Batch mode as in the official recipes: one mixing coefficient per batch, each sample is mixed
with the sample at the mirrored batch position (``x.flip(0)``). Cutmix cuts the same box out of
every frame of a video. Random numbers come from the global torch generator, whose state the
training checkpoints save.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(B,) int -> (B, num_classes) float: ``1 - smoothing + smoothing / K`` on the label,
    ``smoothing / K`` elsewhere."""
    off_value = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off_value, device=labels.device)
    return targets.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off_value)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k targets_k * log_softmax(logits)_k``; logits (B, K), targets (B, K)."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def cutmix_box(height: int, width: int, lam: float, center: tuple[float, float]) -> tuple[int, int, int, int]:
    """Box (y0, y1, x0, x1) covering about ``1 - lam`` of the area, centred at ``center`` in [0, 1)^2, clipped."""
    cut_ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut_ratio), int(width * cut_ratio)
    cy, cx = int(center[0] * height), int(center[1] * width)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


class Mixup:
    """Mix a batch and return soft targets: ``x, targets = mixup(x, labels)``.

    With ``mixup_alpha = cutmix_alpha = 0`` (or ``prob = 0``) it only builds (smoothed) one-hot targets.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.0):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.label_smoothing = float(label_smoothing)

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def _draw(self) -> tuple[str | None, float]:
        """Which mix to apply to this batch and its coefficient lambda."""
        if not self.enabled or torch.rand(()).item() >= self.prob:
            return None, 1.0
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or torch.rand(()).item() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha)).sample().item()
        return ("cutmix" if use_cutmix else "mixup"), lam

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, *spatial), labels (B,) -> mixed x (same shape), targets (B, num_classes) summing to 1."""
        targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        mode, lam = self._draw()
        if mode == "mixup":
            x = x * lam + x.flip(0) * (1.0 - lam)
        elif mode == "cutmix":
            height, width = x.shape[-2:]
            center = torch.rand(2).tolist()
            y0, y1, x0, x1 = cutmix_box(height, width, lam, (center[0], center[1]))
            x = x.clone()
            x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
        if mode is not None:
            targets = targets * lam + targets.flip(0) * (1.0 - lam)
        return x, targets
