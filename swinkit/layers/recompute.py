"""Memory-saving autograd functions: recompute cheap activations in backward instead of keeping them.

Used by the Swin blocks in eager training; under autocast, ``torch.compile`` / ``torch.export`` or
without autograd the plain modules run instead (same numbers).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinkit.layers.mlp import Mlp, gelu_backward_into, gelu_into
from swinkit.layers.workspace import Workspace, affine_into, linear, scratch


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


def layer_norm_again(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor | None,
                     bias: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """The LayerNorm output of x (..., C) rebuilt from its saved row statistics, into ``out`` if given."""
    normed = torch.sub(x, mean, out=out).mul_(rstd) if out is not None else (x - mean).mul_(rstd)
    if weight is not None:
        normed.mul_(weight)
    return normed if bias is None else normed.add_(bias)


def layer_norm_linear(x: torch.Tensor, norm: nn.LayerNorm, layer: nn.Linear) -> torch.Tensor:
    """``layer(norm(x))``; with autograd on, the normalised x is recomputed in backward, not kept; without it, the
    linear kernel normalises x's rows as it reads them where it applies (:func:`workspace.linear`)."""
    if use_recompute_functions(x) and norm.elementwise_affine:
        return LayerNormLinear.apply(x, norm.weight, norm.bias, layer.weight, layer.bias, norm.eps)
    return linear(x, layer.weight, layer.bias, norm)


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
            normalized = layer_norm_again(x, mean, rstd, norm_weight, norm_bias).reshape(-1, channels)
            grad_weight = grad_rows.t().mm(normalized)
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_bias = grad_rows.sum(0)
        grad_normed = grad_out.matmul(weight)
        grad_x, grad_norm_weight, grad_norm_bias = torch.ops.aten.native_layer_norm_backward(
            grad_normed, x, (channels,), mean, rstd, norm_weight, norm_bias,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        return grad_x, grad_norm_weight, grad_norm_bias, grad_weight, grad_bias, None


def norm_mlp(norm: nn.LayerNorm, mlp: Mlp, x: torch.Tensor, workspace: Workspace | None = None,
             keep_hidden: bool = True) -> torch.Tensor:
    """``mlp(norm(x))``; with autograd on, only x, its row statistics and (with ``keep_hidden``) the
    fc1 output are kept for backward (the rest is recomputed: the normalised x, the GELU output and,
    without ``keep_hidden``, fc1 itself), and the hidden-sized temporaries of forward and backward
    are written into ``workspace`` scratch buffers when one is given."""
    act = mlp.act
    if use_recompute_functions(x) and isinstance(act, nn.GELU) and mlp.drop.p == 0.0 and norm.elementwise_affine:
        return NormMlp.apply(x, norm.weight, norm.bias, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias,
                             norm.eps, act.approximate, workspace, keep_hidden)
    return mlp(norm(x))


class NormMlp(torch.autograd.Function):
    """fc2(gelu(fc1(layer_norm(x)))) over the last axis: (..., C) -> (..., C_out).

    Saves x, the row statistics and, with ``keep_hidden``, the fc1 output (else backward computes
    fc1 again: one more matrix product for 4x fewer saved elements per token). The GELU output
    (forward, and backward's recomputed one) and the hidden gradient live in ``workspace`` slots: on CPU a
    fresh hidden-sized tensor per call costs a page fault per 4 KiB. Backward recomputes the GELU output
    and takes the GELU's gradient and fc1's bias gradient in one sweep (:func:`gelu_backward_into`), in no more
    hidden-sized memory than fc1's output, the GELU output and the hidden gradient.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor | None,
                fc1_weight: torch.Tensor, fc1_bias: torch.Tensor | None, fc2_weight: torch.Tensor,
                fc2_bias: torch.Tensor | None, eps: float, approximate: str,
                workspace: Workspace | None, keep_hidden: bool = True) -> torch.Tensor:
        channels = x.shape[-1]
        rows = x.reshape(-1, channels)
        normed, mean, rstd = torch.native_layer_norm(rows, (channels,), norm_weight, norm_bias, eps)
        if keep_hidden:
            pre = F.linear(normed, fc1_weight, fc1_bias)
        else:
            pre = affine_into(scratch(workspace, "mlp_pre", (rows.shape[0], fc1_weight.shape[0]), rows),
                               normed, fc1_weight, fc1_bias)
        del normed
        hidden = gelu_into(scratch(workspace, "mlp_hidden", tuple(pre.shape), pre), pre, approximate)
        out = F.linear(hidden, fc2_weight, fc2_bias)
        ctx.save_for_backward(x, mean, rstd, pre if keep_hidden else None, norm_weight, norm_bias, fc1_weight,
                              fc1_bias if not keep_hidden else None, fc2_weight)
        ctx.approximate, ctx.workspace = approximate, workspace
        ctx.has_bias = (fc1_bias is not None, fc2_bias is not None)
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, mean, rstd, pre, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        channels = x.shape[-1]
        rows = x.reshape(-1, channels)
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1])
        hidden_shape = (rows.shape[0], fc1_weight.shape[0])
        normed = None  # the normalised x, rebuilt from its statistics where fc1 or its gradient needs it
        if pre is None or needs[3]:
            normed = layer_norm_again(rows, mean, rstd, norm_weight, norm_bias,
                                      out=scratch(ctx.workspace, "mlp_normed", tuple(rows.shape), rows))
        # three hidden-sized tensors, two of them slots: fc1's output computed again in "mlp_pre" gets the GELU
        # output in its place (the hidden gradient in "mlp_hidden"); a saved one is left alone (the GELU output in
        # "mlp_hidden", the hidden gradient in "mlp_pre", a slot the blocks that compute fc1 again have grown)
        if pre is None:
            pre = affine_into(scratch(ctx.workspace, "mlp_pre", hidden_shape, rows), normed, fc1_weight, fc1_bias)
            hidden, grad_slot = pre, "mlp_hidden"
        else:
            hidden, grad_slot = scratch(ctx.workspace, "mlp_hidden", hidden_shape, pre), "mlp_pre"
        grad_fc1_weight = grad_fc2_weight = grad_fc2_bias = None
        grad_hidden = torch.mm(grad_rows, fc2_weight, out=scratch(ctx.workspace, grad_slot, hidden_shape, pre))
        grad_fc1_bias = gelu_backward_into(grad_hidden, hidden, pre, ctx.approximate, ctx.has_bias[0] and needs[4])
        del pre
        if needs[5]:
            grad_fc2_weight = grad_rows.t().mm(hidden)
        if ctx.has_bias[1] and needs[6]:
            grad_fc2_bias = grad_rows.sum(0)
        if needs[3]:
            grad_fc1_weight = grad_hidden.t().mm(normed)
        del normed
        grad_normed = torch.mm(grad_hidden, fc1_weight,
                               out=scratch(ctx.workspace, "mlp_normed", tuple(rows.shape), rows))
        grad_x, grad_norm_weight, grad_norm_bias = torch.ops.aten.native_layer_norm_backward(
            grad_normed, rows, (channels,), mean, rstd, norm_weight, norm_bias, [needs[0], needs[1], needs[2]])
        if grad_x is not None:
            grad_x = grad_x.view(x.shape)
        return (grad_x, grad_norm_weight, grad_norm_bias, grad_fc1_weight, grad_fc1_bias, grad_fc2_weight,
                grad_fc2_bias, None, None, None, None)
