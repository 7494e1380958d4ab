"""swinkit's compiled CPU GELU (swinkit/csrc/gelu.cpp and the linear kernel's GELU epilogue): checked against
float64 GELU and its derivative over the whole range (tails included) and lengths that are not a multiple of
the vector width, the fused backward sweep against PyTorch's three passes, and the MLP paths that use them
against the same paths with the kernels off."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from swinkit.layers import mlp as mlp_module
from swinkit.layers import native
from swinkit.layers.mlp import Mlp, gelu_backward_into, gelu_into
from swinkit.layers.recompute import NormMlp
from swinkit.layers.workspace import Workspace


def gelu_bound(x: torch.Tensor) -> torch.Tensor:
    """What fp32 GELU may be off by: a few ulp of max(1, |x|) (PyTorch's own GELU keeps to it too)."""
    return 3e-7 * x.double().abs().clamp(min=1.0)


def test_kernels_build_here():
    assert native.available()


@pytest.mark.parametrize("length", [1, 7, 8, 9, 4099, 70001])
def test_gelu_matches_float64(length):
    x = torch.linspace(-12.0, 12.0, length) if length > 1 else torch.tensor([0.7])
    exact = F.gelu(x.double())
    assert ((F.gelu(x).double() - exact).abs() <= gelu_bound(x)).all()  # the bound PyTorch's GELU meets
    out = torch.full_like(x, float("nan"))
    native.gelu_(out, x)
    assert ((out.double() - exact).abs() <= gelu_bound(x)).all()
    in_place = x.clone()
    native.gelu_(in_place, in_place)
    assert torch.equal(in_place, out)
    assert torch.equal(native.gelu_(torch.empty(0), torch.empty(0)), torch.empty(0))


def test_gelu_saturates_and_keeps_signs():
    x = torch.tensor([-1e30, -40.0, -6.0, -0.0, 0.0, 1e-30, 6.0, 40.0, 1e30])
    out = native.gelu_(torch.empty_like(x), x)
    torch.testing.assert_close(out, F.gelu(x), rtol=0, atol=1e-6)
    assert out[-1] == 1e30 and out[0] == 0 and (out[:4] <= 0).all() and (out[4:] >= 0).all()


@pytest.mark.parametrize("rows,features", [(1, 8), (3, 5), (129, 24), (300, 387), (1000, 96)])
def test_gelu_backward_matches_float64(rows, features):
    generator = torch.Generator().manual_seed(rows + features)
    pre = torch.randn(rows, features, generator=generator) * 3
    grad_out = torch.randn(rows, features, generator=generator)
    grad, hidden = grad_out.clone(), torch.full_like(pre, float("nan"))
    sums = native.gelu_backward_(grad, hidden, pre, sum_rows=True)
    assert torch.equal(hidden, native.gelu_(torch.empty_like(pre), pre))  # the forward pass's bits
    exact = torch.ops.aten.gelu_backward(grad_out.double(), pre.double())
    assert ((grad.double() - exact).abs() <= 3e-7 * grad_out.double().abs().clamp(min=1.0)).all()
    torch.testing.assert_close(sums.double(), exact.sum(0), rtol=0, atol=1e-6 * rows ** 0.5)
    again = grad_out.clone()
    assert native.gelu_backward_(again, torch.empty_like(pre), pre) is None
    assert torch.equal(again, grad)
    in_place, again = pre.clone(), grad_out.clone()  # the GELU output over fc1's output
    native.gelu_backward_(again, in_place, in_place)
    assert torch.equal(in_place, hidden) and torch.equal(again, grad)


def test_gelu_backward_sums_are_the_same_for_any_thread_count():
    generator = torch.Generator().manual_seed(3)
    pre, grad_out = torch.randn(1000, 40, generator=generator), torch.randn(1000, 40, generator=generator)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(native.gelu_backward_(grad_out.clone(), torch.empty_like(pre), pre, sum_rows=True))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])  # fixed blocks of rows, summed in order


def test_linear_gelu_epilogue_matches_float64():
    generator = torch.Generator().manual_seed(4)
    for rows, inputs, outputs in ((7, 96, 384), (50, 600, 40), (13, 300, 21)):  # one and several input blocks
        x = torch.randn(rows, inputs, generator=generator)
        weight = torch.randn(outputs, inputs, generator=generator) / inputs ** 0.5
        bias = torch.randn(outputs, generator=generator)
        out = torch.full((rows, outputs), float("nan"))
        native.linear_(out, x, weight, bias, gelu=True)
        product = native.linear_(torch.empty(rows, outputs), x, weight, bias)
        assert torch.equal(out, native.gelu_(product, product))  # the GELU on the accumulators, as gelu_ computes it
        exact = F.gelu(F.linear(x.double(), weight.double(), bias.double()))
        assert (out.double() - exact).abs().max() <= 1e-5


def test_errors_name_what_was_expected():
    x = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="x must be a contiguous float32"):
        native.GELU_OP(torch.empty(4, 8), x.double())
    with pytest.raises(RuntimeError, match=r"out must be a contiguous float32 CPU tensor of shape \[4, 8\]"):
        native.GELU_OP(torch.empty(4, 9), x)
    with pytest.raises(RuntimeError, match=r"pre must be a contiguous float32 CPU \(rows, features\)"):
        native.GELU_BACKWARD_OP(torch.empty(32), torch.empty(32), torch.randn(32), False)
    with pytest.raises(RuntimeError, match=r"hidden must be .* of shape \[4, 8\]"):
        native.GELU_BACKWARD_OP(torch.empty(4, 8), torch.empty(8, 4).t(), x, False)
    with pytest.raises(RuntimeError, match="gelu applies to the product itself"):
        native.LINEAR_OP(torch.empty(4, 16), x, torch.randn(16, 8), None, True, True)


def test_helpers_fall_back_to_pytorch_where_the_kernels_do_not_apply():
    x = torch.randn(6, 10, dtype=torch.float64)
    torch.testing.assert_close(gelu_into(torch.empty_like(x), x), F.gelu(x))
    same = x.clone()
    assert gelu_into(same, same, "tanh") is same
    torch.testing.assert_close(same, F.gelu(x, approximate="tanh"))
    for dtype, approximate in ((torch.float64, "none"), (torch.float32, "tanh"), (torch.float32, "none")):
        pre, grad_out = x.to(dtype), torch.randn(6, 10, dtype=dtype)
        grad, hidden = grad_out.clone(), torch.empty_like(pre)
        sums = gelu_backward_into(grad, hidden, pre, approximate, sum_rows=True)
        expected = torch.ops.aten.gelu_backward(grad_out, pre, approximate=approximate)
        torch.testing.assert_close(grad, expected)
        torch.testing.assert_close(hidden, F.gelu(pre, approximate=approximate))
        torch.testing.assert_close(sums, expected.sum(0))
        in_place, grad = pre.clone(), grad_out.clone()
        gelu_backward_into(grad, in_place, in_place, approximate)
        torch.testing.assert_close(grad, expected)
        torch.testing.assert_close(in_place, hidden)


def kernels_off(monkeypatch) -> None:
    """The GELU kernels off: PyTorch's GELU, also after the linear kernel's products."""
    monkeypatch.setattr(native, "gelu_applies", lambda *tensors: False)
    real = native.linear_

    def linear_then_pytorch_gelu(*args, gelu=False, **kwargs):
        out = real(*args, **kwargs)
        return mlp_module.gelu_into(out, out) if gelu else out

    monkeypatch.setattr(native, "linear_", linear_then_pytorch_gelu)


def test_mlp_inference_paths_match_the_kernels_off(monkeypatch):
    torch.manual_seed(0)
    mlp = Mlp(24, 96).eval()
    x = torch.randn(37, 24)
    with torch.inference_mode():
        fused = mlp.hidden_into(torch.empty(37, 96), x)
        activated = mlp.activate(F.linear(x, mlp.fc1.weight, mlp.fc1.bias))
        expected = F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias))
        torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(activated, expected, rtol=1e-5, atol=1e-6)
        mlp.act = torch.nn.GELU(approximate="tanh")  # not the exact GELU: PyTorch's product, then its tanh GELU
        torch.testing.assert_close(mlp.hidden_into(torch.empty(37, 96), x),
                                   F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias), approximate="tanh"))


def norm_mlp_gradients(x, params, keep_hidden):
    leaves = [p.clone().requires_grad_() for p in (x, *params)]
    out = NormMlp.apply(*leaves, 1e-5, "none", Workspace(), keep_hidden)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("keep_hidden", [True, False])
def test_norm_mlp_training_with_the_kernels_matches_them_off(keep_hidden, monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(3, 50, 24)
    params = [torch.randn(24) + 1, torch.randn(24), torch.randn(96, 24) / 5, torch.randn(96), torch.randn(24, 96) / 10,
              torch.randn(24)]
    calls = []
    real = native.gelu_backward_
    monkeypatch.setattr(native, "gelu_backward_", lambda *args: calls.append(args[3]) or real(*args))
    fast_out, fast = norm_mlp_gradients(x, params, keep_hidden)
    assert calls == [True]  # one sweep, fc1's bias gradient in it
    kernels_off(monkeypatch)
    plain_out, plain = norm_mlp_gradients(x, params, keep_hidden)
    assert calls == [True]
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(fast, plain):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
