"""Mixed precision: which autocast dtype a ``precision`` name means on a device."""
from __future__ import annotations

import contextlib

import torch


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no GPU is available; use --device cpu")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """'amp' -> 'fp16' on GPU, 'bf16' on CPU; 'fp16' on CPU is an error (no fast fp16 kernels there)."""
    if precision == "amp":
        return "fp16" if device.type == "cuda" else "bf16"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a GPU (GradScaler); use --precision bf16 on CPU")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16, fp16 or amp, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str):
    """Autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
