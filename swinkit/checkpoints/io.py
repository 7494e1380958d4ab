"""Reading and writing checkpoint files safely.

``.pth``/``.pt``/``.bin`` files are read with ``torch.load(weights_only=True)`` only, so a pickle
that tries to run code is refused; ``.safetensors`` are read natively. Writes go to a temporary
file in the same folder and are renamed into place, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


def read_checkpoint(path: str | os.PathLike) -> tuple[Any, dict[str, str]]:
    """Load ``path`` without executing code. Returns (object, safetensors metadata or {})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read safetensors file {path}: {err}") from None
        return tensors, metadata
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_unpickling_message(path, str(err))) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or corrupt "
                              f"({_first_line(err)})") from None
    return obj, {}


def _unpickling_message(path: Path, text: str) -> str:
    """Why the restricted unpickler stopped: a forbidden import (possible code execution) or bad data."""
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"refused to load {path}: unpickling it would import and call '{found[1]}', which can run "
                f"arbitrary code; only tensors, numbers, strings and containers are allowed. If you trust the "
                f"file, re-save its state dict with torch.save(state_dict, ...) in a trusted environment.")
    opcode = re.search(r"Unsupported operand (\d+)", text)
    detail = f"unsupported pickle opcode {opcode[1]}" if opcode else "not a plain weights file"
    return (f"cannot read checkpoint {path}: it is corrupt or not a PyTorch weights file ({detail}); only "
            f"files written by torch.save, or .safetensors files, are read")


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``; nothing partial survives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
