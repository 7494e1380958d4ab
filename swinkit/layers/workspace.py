"""Scratch buffers kept between calls.

On CPU, a large temporary freed after every call makes the C allocator give its pages back to the
OS and fault them in again on the next call (a page fault per 4 KiB; up to 1.7x slower on the
machines we measure). Inference paths, and the MLP's forward and backward in training, write into
the same buffers every call and so touch memory that stays mapped. Buffers are per thread, so one
model can serve several threads.
"""
from __future__ import annotations

import math
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinkit.layers import native
from swinkit.layers.checks import has_forward_hooks


class Workspace:
    """Named scratch tensors, grown on demand and reused: ``take(slot, shape, like)``.

    A slot's buffer is overwritten by the next ``take`` of the same slot, so a caller owns a slot
    only until it asks for it again. Holds at most a few chunks' worth of activations per slot.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def _buffers(self) -> dict[tuple, torch.Tensor]:
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        return buffers

    def take(self, slot: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape`` with ``like``'s dtype and device."""
        buffers = self._buffers()
        key = (slot, like.device, like.dtype)
        numel = math.prod(shape)
        buffer = buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            with torch.inference_mode(False):  # a normal tensor: writable in and out of inference mode
                buffers[key] = buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buffer[:numel].view(shape)

    def clear(self) -> None:
        """Free this thread's buffers."""
        self._buffers().clear()

    def __getstate__(self) -> dict:  # buffers are scratch: never pickled or deep-copied
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def scratch(workspace: Workspace | None, slot: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """``workspace.take(slot, shape, like)``, or a fresh uninitialised tensor without a workspace."""
    if workspace is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return workspace.take(slot, shape, like)


def linear_into(out: torch.Tensor, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``out[:] = linear(x)`` for x (n, C_in), out (n, C_out). Returns ``out``."""
    return affine_into(out, x, linear.weight, linear.bias)


def fusable_norm(norm: nn.Module, x: torch.Tensor) -> bool:
    """Whether the linear kernel may apply ``norm`` to x (n, C) as it packs x's rows (:func:`native.norm_applies`)
    in place of a call to the module: no hook watches it."""
    return native.norm_applies(norm, x) and not has_forward_hooks(norm)


def norm_linear_applies(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        norm: nn.Module | None) -> bool:
    """Whether the linear kernel computes ``out[:] = F.linear(norm(x), weight, bias)`` in one call (``norm`` None:
    x itself): it takes the product (:func:`native.linear_applies`) and the norm (:func:`fusable_norm`)."""
    return native.linear_applies(out, x, weight, bias) and (norm is None or fusable_norm(norm, x))


def norm_linear_into(out: torch.Tensor, x: torch.Tensor, norm: nn.Module | None, linear: nn.Linear) -> torch.Tensor:
    """``out[:] = linear(norm(x))`` (``norm`` None: x itself) for x (n, C), out (n, C_out): the LayerNorm applied by
    the linear kernel as it packs x's rows (no normalised copy of x) where both apply (:func:`norm_linear_applies`);
    else ``norm`` as a module, then the product. Returns ``out``."""
    weight, bias = linear.weight, linear.bias
    if norm_linear_applies(out, x, weight, bias, norm):
        return native.linear_(out, x, weight, bias, norm=norm)
    return affine_into(out, x if norm is None else norm(x), weight, bias)


def affine_into(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``out[:] = F.linear(x, weight, bias)`` for x (n, C_in), out (n, C_out). Returns ``out``."""
    if native.linear_applies(out, x, weight, bias):
        return native.linear_(out, x, weight, bias)
    if bias is None:
        return torch.mm(x, weight.t(), out=out)
    return torch.addmm(bias, x, weight.t(), out=out)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           norm: nn.Module | None = None) -> torch.Tensor:
    """``F.linear(norm(x), weight, bias)`` (``norm`` None: x itself): x (..., C_in) -> (..., C_out), on swinkit's
    compiled kernel where it applies (fp32 CPU without autograd, eager: 1.2-1.5x PyTorch's product on the few-row
    products of batch-1 stages), which then also applies the LayerNorm as it reads x's rows (no normalised copy)
    where :func:`fusable_norm` allows; else ``norm`` runs as a module."""
    if norm is not None and (torch.compiler.is_compiling() or not fusable_norm(norm, x)):
        x, norm = norm(x), None
    if x.dim() >= 2 and not torch.compiler.is_compiling() and native.autograd_free((x, weight)):
        rows = x.reshape(-1, x.shape[-1])
        out = rows.new_empty(rows.shape[0], weight.shape[0])
        if native.linear_applies(out, rows, weight, bias):
            return native.linear_(out, rows, weight, bias, norm=norm).view(*x.shape[:-1], weight.shape[0])
    return F.linear(x if norm is None else norm(x), weight, bias)


def linear_add_(acc: torch.Tensor, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``acc += linear(x)`` in place, the product accumulated by the matrix multiply itself. Returns ``acc``."""
    weight, bias = linear.weight, linear.bias
    if native.linear_applies(acc, x, weight, bias):
        return native.linear_(acc, x, weight, bias, accumulate=True)
    acc.addmm_(x, weight.t())
    return acc if bias is None else acc.add_(bias)
