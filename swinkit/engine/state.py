"""Training checkpoints: atomic writes and the random-number-generator states of a process.

A training checkpoint is a plain dict saved with ``torch.save`` and readable with
``torch.load(..., weights_only=True)``::

    format      "swinkit.train"            version   1
    model       state dict (unwrapped)      model_name, model_kwargs, classes, kind, data_options
    config      TrainConfig as a dict       epoch, step, batch_in_epoch
    optimizer, scheduler, scaler, ema       rng: one rng_state() per process rank
    meters      running sums of the unfinished epoch
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swinkit.checkpoints.io import atomic_torch_save, atomic_write, read_checkpoint

CHECKPOINT_FORMAT = "swinkit.train"
CHECKPOINT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """States of python's, numpy's and torch's global generators (CUDA too when present).

    Plain python values only (lists of ints), so the state can travel through
    ``all_gather_object`` and be read back with ``weights_only=True``.
    """
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"bit_generator": np_state["bit_generator"], "key": np_state["state"]["key"].tolist(),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": np_state["bit_generator"],
                         "state": {"key": np.asarray(np_state["key"], dtype=np.uint32), "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` onto ``path``."""
    return atomic_torch_save(obj, path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by the trainer (ValueError if the file is something else)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt, _ = read_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a swinkit training checkpoint (no format={CHECKPOINT_FORMAT!r} entry); "
                         f"pass official weights with --weights and --model instead")
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {ckpt['version']}, newer than this swinkit "
                         f"({CHECKPOINT_VERSION})")
    return ckpt
