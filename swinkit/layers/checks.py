"""Input validation shared by every model family: one clear ``ValueError`` per mistake."""
from __future__ import annotations

import torch


def check_input(x: torch.Tensor, *, num_spatial_dims: int, in_chans: int, min_size: tuple[int, ...] | None = None,
                model_name: str = "model") -> None:
    """Raise ``ValueError`` unless ``x`` is a float tensor (B, in_chans, *spatial) with non-empty axes.

    ``num_spatial_dims`` is 2 for images (B, C, H, W) and 3 for videos (B, C, T, H, W).
    ``min_size`` gives the smallest accepted size per spatial axis.
    """
    names = ("T", "H", "W")[-num_spatial_dims:]
    expected = f"(B, {in_chans}, {', '.join(names)})"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{model_name} expects a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if x.ndim != 2 + num_spatial_dims:
        raise ValueError(f"{model_name} expects a {2 + num_spatial_dims}-D input {expected}, "
                         f"got a {x.ndim}-D tensor of shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{model_name} expects a floating-point input {expected}, got dtype {x.dtype}; "
                         f"convert and normalise it first (e.g. x.float() / 255 then mean/std)")
    if x.shape[1] != in_chans:
        raise ValueError(f"{model_name} expects {in_chans} input channels {expected}, "
                         f"got shape {tuple(x.shape)} with {x.shape[1]} channels")
    if x.numel() == 0:
        raise ValueError(f"{model_name} got an empty input of shape {tuple(x.shape)}; expected {expected} "
                         f"with every axis >= 1")
    if min_size is not None:
        sizes = tuple(x.shape[2:])
        if any(s < m for s, m in zip(sizes, min_size)):
            need = ", ".join(f"{n}>={m}" for n, m in zip(names, min_size))
            raise ValueError(f"{model_name} input {tuple(x.shape)} is too small: expected {expected} with {need}")


def has_forward_hooks(module: torch.nn.Module, recurse: bool = True) -> bool:
    """Whether a forward (pre-)hook watches ``module`` (or, with ``recurse``, any module inside it).
    Inference paths that reorder tokens or overwrite activations in place run only when none does."""
    if module._forward_hooks or module._forward_pre_hooks:
        return True
    return recurse and any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())
