"""Memory-saving autograd functions: recompute cheap activations in backward instead of keeping them.

Used by the Swin blocks in eager training; under autocast, ``torch.compile`` / ``torch.export`` or
without autograd the plain modules run instead (same numbers).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinkit.layers.mlp import Mlp


def autocast_enabled(x: torch.Tensor) -> bool:
    """Whether autocast is on for x's device (False for device types autocast does not know, e.g. meta)."""
    return x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)


def autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast gives matrix products on x's device, or x's own dtype without autocast."""
    return torch.get_autocast_dtype(x.device.type) if autocast_enabled(x) else x.dtype


def use_recompute_functions(x: torch.Tensor) -> bool:
    """Whether the memory-saving autograd functions apply: eager autograd without autocast (they
    compute in the input dtype and would mix bf16/fp16 activations with fp32 weights)."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling() and not autocast_enabled(x)


def layer_norm_linear(x: torch.Tensor, norm: nn.LayerNorm, linear: nn.Linear) -> torch.Tensor:
    """``linear(norm(x))``; with autograd on, the normalised x is recomputed in backward, not kept."""
    if use_recompute_functions(x) and norm.elementwise_affine:
        return LayerNormLinear.apply(x, norm.weight, norm.bias, linear.weight, linear.bias, norm.eps)
    return linear(norm(x))


class LayerNormLinear(torch.autograd.Function):
    """linear(layer_norm(x)) over the last axis that saves x and the row statistics only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor | None,
                weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
        shape = (x.shape[-1],)
        normed, mean, rstd = torch.native_layer_norm(x, shape, norm_weight, norm_bias, eps)
        ctx.save_for_backward(x, mean, rstd, norm_weight, norm_bias, weight)
        ctx.has_bias = bias is not None
        return F.linear(normed, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, mean, rstd, norm_weight, norm_bias, weight = ctx.saved_tensors
        channels = x.shape[-1]
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1])
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[3]:
            normed = (x - mean).mul_(rstd)
            if norm_weight is not None:
                normed.mul_(norm_weight)
            if norm_bias is not None:
                normed.add_(norm_bias)
            grad_weight = grad_rows.t().mm(normed.reshape(-1, channels))
            del normed
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_bias = grad_rows.sum(0)
        grad_normed = grad_out.matmul(weight)
        grad_x, grad_norm_weight, grad_norm_bias = torch.ops.aten.native_layer_norm_backward(
            grad_normed, x, (channels,), mean, rstd, norm_weight, norm_bias,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        return grad_x, grad_norm_weight, grad_norm_bias, grad_weight, grad_bias, None


def norm_mlp(norm: nn.LayerNorm, mlp: Mlp, x: torch.Tensor) -> torch.Tensor:
    """``mlp(norm(x))``; with autograd on, the normalised x and the GELU output are recomputed in
    backward instead of kept (4 + 1 fewer channels-worth of activations per token)."""
    act = mlp.act
    if use_recompute_functions(x) and isinstance(act, nn.GELU) and mlp.drop.p == 0.0:
        return GeluLinear.apply(layer_norm_linear(x, norm, mlp.fc1), mlp.fc2.weight, mlp.fc2.bias, act.approximate)
    return mlp(norm(x))


class GeluLinear(torch.autograd.Function):
    """linear(gelu(x), weight, bias) that saves only x: (..., C_in) -> (..., C_out)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                approximate: str = "none") -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.approximate = approximate
        ctx.has_bias = bias is not None
        return F.linear(F.gelu(x, approximate=approximate), weight, bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1])
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            hidden = F.gelu(x, approximate=ctx.approximate)
            grad_weight = grad_rows.t().mm(hidden.reshape(-1, hidden.shape[-1]))
            del hidden
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        grad_x = torch.ops.aten.gelu_backward(grad_out.matmul(weight), x, approximate=ctx.approximate)
        return grad_x, grad_weight, grad_bias, None
