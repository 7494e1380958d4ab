"""Transformer feed-forward block and its GELU."""
from __future__ import annotations

import torch
import torch.nn as nn

from swinkit.layers import native
from swinkit.layers.workspace import norm_linear_applies, norm_linear_into


def gelu_into(out: torch.Tensor, x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``out[:] = gelu(x)`` (``out`` may be ``x``): on swinkit's kernel for the exact GELU where it applies (fp32 CPU,
    contiguous, no autograd: 1.5x PyTorch's), else PyTorch's. Returns ``out``."""
    if approximate == "none" and native.gelu_applies(out, x):
        return native.gelu_(out, x)
    if out is x:
        return torch.ops.aten.gelu_(x, approximate=approximate)
    return torch._C._nn.gelu(x, approximate=approximate, out=out)


def gelu_backward_into(grad: torch.Tensor, hidden: torch.Tensor, pre: torch.Tensor, approximate: str = "none",
                       sum_rows: bool = False) -> torch.Tensor | None:
    """The GELU's backward pass for pre (n, C): ``hidden[:] = gelu(pre)`` and ``grad *= gelu'(pre)`` in place
    (grad, hidden (n, C); hidden may be pre, which it then overwrites); returns grad's column sums (C,) with
    ``sum_rows``, else None. One sweep on swinkit's kernel where it applies, else PyTorch's three."""
    if approximate == "none" and native.gelu_applies(grad, hidden, pre):
        return native.gelu_backward_(grad, hidden, pre, sum_rows)
    torch.ops.aten.gelu_backward.grad_input(grad, pre, approximate=approximate, grad_input=grad)
    torch._C._nn.gelu(pre, approximate=approximate, out=hidden)
    return grad.sum(0) if sum_rows else None


class Mlp(nn.Module):
    """Linear(C, hidden) -> GELU -> Dropout -> Linear(hidden, C) -> Dropout on (..., C)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.activate(self.fc1(x)))))

    def activate(self, hidden: torch.Tensor) -> torch.Tensor:
        """GELU; without autograd it overwrites ``hidden`` (one large temporary fewer)."""
        if torch.is_grad_enabled() or not isinstance(self.act, nn.GELU):
            return self.act(hidden)
        return gelu_into(hidden, hidden, self.act.approximate)

    def exact_gelu(self) -> bool:
        """Whether the activation is the exact (erf) GELU, the one swinkit's kernels compute themselves."""
        return isinstance(self.act, nn.GELU) and self.act.approximate == "none"

    def hidden_into(self, out: torch.Tensor, x: torch.Tensor, norm: nn.Module | None = None) -> torch.Tensor:
        """``out[:] = act(fc1(norm(x)))`` (``norm`` None: x itself) for x (n, C), out (n, hidden), without autograd:
        where the linear kernel applies, it normalises x's rows as it packs them and applies the exact GELU to each
        output tile while it is in registers. Returns ``out``."""
        fc1 = self.fc1
        weight, bias = fc1.weight, fc1.bias
        if self.exact_gelu() and norm_linear_applies(out, x, weight, bias, norm):
            return native.linear_(out, x, weight, bias, gelu=True, norm=norm)
        return self.activate(norm_linear_into(out, x, norm, fc1))
