"""Prediction (top-k classes per file) and feature extraction for files and folders."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from swinkit.data.datasets import make_loader
from swinkit.engine import amp
from swinkit.engine.evaluate import forward_views, num_spatial_dims


def model_kind(model: nn.Module) -> str:
    return "video" if num_spatial_dims(model) == 3 else "image"


def media_files(path: str | os.PathLike, kind: str) -> list[str]:
    """``path`` itself if it is a file, else every ``kind`` file below the folder (sorted)."""
    from swinkit.data import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    extensions = VIDEO_EXTENSIONS if kind == "video" else IMAGE_EXTENSIONS
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in extensions:
            raise ValueError(f"{path} is not a {kind} file, which this {kind} model needs "
                             f"(expected one of {', '.join(extensions)})")
        return [str(path)]
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path}")
    files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise ValueError(f"no {kind} files ({', '.join(extensions)}) found in {path}")
    return files


def files_dataset(files: list[str], kind: str, split: str, classes: list[str], data_options: dict):
    """A swinkit.data dataset over ``files`` (labels unknown: 0) with the transforms of ``split``."""
    from swinkit.data import build_dataset

    with tempfile.TemporaryDirectory(prefix="swinkit-files-") as folder:
        list_file = Path(folder) / "files.txt"
        list_file.write_text("".join(f"{os.path.abspath(f)} 0\n" for f in files))
        return build_dataset(folder, list_file, kind=kind, split=split, classes=classes or ["0"], **data_options)


@torch.no_grad()
def predict(model: nn.Module, dataset, classes: list[str], topk: int = 5, average: str = "prob",
            max_views_per_batch: int = 4, batch_size: int = 1, num_workers: int = 0, precision: str = "fp32",
            progress: bool = False) -> list[dict]:
    """One record per file: ``{"path", "top": [{"label", "class", "prob"}, ...]}`` or ``{"path", "error"}``.

    Probabilities are the view-averaged softmax ('prob'), or the softmax of view-averaged logits ('score').
    """
    device = next(model.parameters()).device
    spatial_dims = num_spatial_dims(model)
    model.eval()
    results = []
    batches = make_loader(dataset, batch_size, num_workers)
    for batch in tqdm(batches, desc="predict", disable=None if progress else True, leave=False):
        results += [{"path": path, "error": error} for path, error in batch["skipped"]]
        if batch["inputs"] is None:
            continue
        with amp.autocast(device, precision):
            logits = forward_views(model, batch["inputs"].to(device), max_views_per_batch, spatial_dims)
        if average == "prob":
            probs = logits.softmax(-1).mean(1)
        else:
            probs = logits.mean(1).softmax(-1)
        values, labels = probs.cpu().topk(min(topk, probs.shape[-1]), dim=-1)
        for path, row_values, row_labels in zip(batch["paths"], values.tolist(), labels.tolist()):
            top = [{"label": label, "class": classes[label] if label < len(classes) else str(label), "prob": value}
                   for value, label in zip(row_values, row_labels)]
            results.append({"path": path, "top": top})
    return results


def parse_stages(text: str, num_stages: int) -> list[int] | None:
    """``"pooled"`` -> None; ``"all"`` -> every stage; ``"0,2,-1"`` -> those stage indices."""
    if text == "pooled":
        return None
    if text == "all":
        return list(range(num_stages))
    try:
        stages = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"stages must be 'pooled', 'all' or comma-separated stage indices, got {text!r}") from None
    for stage in stages:
        if not -num_stages <= stage < num_stages:
            raise ValueError(f"stage {stage} does not exist; the model has stages 0..{num_stages - 1}")
    return [s % num_stages for s in stages]


@torch.no_grad()
def extract_features(model: nn.Module, dataset, stages: list[int] | None = None, batch_size: int = 8,
                     num_workers: int = 0, precision: str = "fp32",
                     progress: bool = False) -> tuple[dict[str, torch.Tensor], list[str], list[tuple[str, str]]]:
    """Features of every readable file: ``{"pooled": (N, C)}`` or ``{"stage{i}": (N, C_i, *grid_i)}``.

    Pooled features are ``model.forward_head(..., pre_logits=True)``; stage maps are
    ``model.forward_features(x, out_indices=stages)``. Returns (features, paths in row order, skipped).
    """
    device = next(model.parameters()).device
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    paths: list[str] = []
    skipped: list[tuple[str, str]] = []
    batches = make_loader(dataset, batch_size, num_workers)
    for batch in tqdm(batches, desc="extract", disable=None if progress else True, leave=False):
        skipped += batch["skipped"]
        if batch["inputs"] is None:
            continue
        with amp.autocast(device, precision):
            if stages is None:
                outputs = {"pooled": model.forward_head(model.forward_features(batch["inputs"].to(device)),
                                                        pre_logits=True)}
            else:
                maps = model.forward_features(batch["inputs"].to(device), out_indices=stages)
                outputs = {f"stage{i}": m for i, m in zip(stages, maps)}
        for name, value in outputs.items():
            chunks.setdefault(name, []).append(value.float().cpu())
        paths += batch["paths"]
    if not paths:
        raise ValueError("no file could be read; nothing to extract")
    return {name: torch.cat(values) for name, values in chunks.items()}, paths, skipped


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # np.save(path) would append ".npy" to the temporary name
        np.save(handle, array)


def save_features(features: dict[str, torch.Tensor], paths: list[str], out: str | os.PathLike) -> list[Path]:
    """Write ``.safetensors`` (all arrays, paths in the metadata) or ``.npy`` (one file per array:
    ``out`` itself for a single array, ``<stem>.<name>.npy`` otherwise) plus ``<stem>.paths.json``."""
    from swinkit.checkpoints.io import atomic_save_safetensors, atomic_write

    out = Path(out)
    if out.suffix == ".safetensors":
        return [atomic_save_safetensors(features, out, metadata={"paths": paths})]
    if out.suffix != ".npy":
        raise ValueError(f"output must end in .safetensors or .npy, got {out.name}")
    written = []
    for name, value in features.items():
        target = out if len(features) == 1 else out.with_name(f"{out.stem}.{name}.npy")
        written.append(atomic_write(target, lambda tmp, array=value.numpy(): _save_npy(tmp, array)))
    written.append(atomic_write(out.with_name(f"{out.stem}.paths.json"),
                                lambda tmp: Path(tmp).write_text(json.dumps(paths, indent=1))))
    return written
