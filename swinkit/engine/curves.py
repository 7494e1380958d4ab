"""The training log: one JSON line per epoch, and a PNG of the curves (loss, accuracy, learning rate)."""
from __future__ import annotations

import io
import json
from pathlib import Path

from swinkit.engine.state import write_bytes_atomic, write_text_atomic


def write_jsonl(history: list[dict], path: str | Path) -> Path:
    """Rewrite ``path`` with one JSON object per epoch record (atomically, so a resumed run never duplicates)."""
    return write_text_atomic(path, "".join(json.dumps(record, sort_keys=True) + "\n" for record in history))


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(history: list[dict], path: str | Path) -> Path:
    """Three panels over epochs: train/val loss, train/val top-1, learning rate; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (("loss", ("train_loss", "val_loss")), ("top-1 accuracy", ("train_top1", "val_top1")),
              ("learning rate", ("lr",)))
    for axis, (title, keys) in zip(axes, panels):
        for key in keys:
            epochs, values = _series(history, key)
            if values:
                axis.plot(epochs, values, marker="o", markersize=3, label=key)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())
