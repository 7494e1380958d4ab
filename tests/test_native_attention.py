"""swinkit's compiled CPU window-attention kernel (swinkit/csrc/window_attention.cpp): built here, checked
against float64 attention, dispatched to only where it applies, and replaced by the PyTorch paths where
it is off or cannot be built."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import swinkit
from swinkit.layers import native
from swinkit.layers import window_attention as wa


def reference(q, k, v, bias, scale):
    """float64 softmax(scale q k^T + bias) v per window -> (W, N, nH, hd)."""
    count = q.shape[0]
    logits = torch.einsum("whnd,whmd->whnm", q.double(), k.double()) * scale
    if bias is not None:
        per_window = bias if bias.dim() == 4 else bias.unsqueeze(0)
        logits = logits + per_window.repeat(count // per_window.shape[0], 1, 1, 1).double()
    return torch.einsum("whnm,whmd->whnd", logits.softmax(-1), v.double()).transpose(1, 2)


def qkv_views(windows, heads, tokens, head_dim, generator):
    """q, k, v as split_heads gives them: strided views of one (W, N, 3C) projection."""
    qkv = torch.randn(windows, tokens, 3 * heads * head_dim, generator=generator)
    return wa.split_heads(qkv, heads)


def test_kernel_builds_here():
    assert native.enabled(), "CI and this machine run AVX2: the kernel must be on"
    assert native.available()


@pytest.mark.parametrize("tokens", [1, 7, 8, 9, 16, 35, 49, 98, 196, 392])
@pytest.mark.parametrize("heads,head_dim", [(1, 8), (3, 32), (5, 64)])
def test_matches_float64_attention(tokens, heads, head_dim):
    generator = torch.Generator().manual_seed(tokens * 100 + heads)
    windows = 6
    q, k, v = qkv_views(windows, heads, tokens, head_dim, generator)
    scale = head_dim ** -0.5
    shared = torch.randn(heads, tokens, tokens, generator=generator)
    per_window = torch.randn(3, heads, tokens, tokens, generator=generator)
    per_window[1, :, : tokens // 2, tokens // 2:] -= 100.0  # a shift mask's blocks
    for bias in (shared, per_window):
        out = native.window_attention(q, k, v, bias, scale)
        assert out.shape == (windows, tokens, heads, head_dim) and out.is_contiguous()
        torch.testing.assert_close(out.double(), reference(q, k, v, bias, scale), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("windows,heads,tokens,keys", [(1, 1, 3136, 49), (1, 2, 784, 196), (2, 4, 196, 49),
                                                       (1, 1, 100, 7), (3, 2, 50, 200), (1, 1, 5, 1)])
def test_queries_and_keys_of_different_counts(windows, heads, tokens, keys):
    """Shunted attention: N queries against M aggregated keys, q and k / v from different projections, no
    bias (and with one); few (window, head) pairs split into blocks of query rows."""
    generator = torch.Generator().manual_seed(tokens + keys)
    head_dim = 32
    q = torch.randn(windows, tokens, heads * 2 * head_dim, generator=generator)[..., : heads * head_dim]
    q = q.unflatten(-1, (heads, head_dim)).transpose(1, 2)  # strided like Shunted's q[:, :half]
    k, v = (torch.randn(windows, keys, heads * head_dim, generator=generator).unflatten(-1, (heads, head_dim))
            .transpose(1, 2) for _ in range(2))
    scale = head_dim ** -0.5
    for bias in (None, torch.randn(heads, tokens, keys, generator=generator)):
        out = native.window_attention(q, k, v, bias, scale)
        assert out.shape == (windows, tokens, heads, head_dim)
        torch.testing.assert_close(out.double(), reference(q, k, v, bias, scale), atol=2e-6, rtol=1e-5)


def test_large_logits_and_contiguous_inputs():
    """Logits in the hundreds: fp32 rounding of the logits alone moves the result by ~1e-4 here, so the
    kernel is held to PyTorch's own fp32 attention error on the same inputs."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 2, 49, 16, generator=generator) * 6 for _ in range(3))
    bias = torch.zeros(2, 49, 49)
    expected = reference(q, k, v, bias, 1.0)
    torch_error = (F.scaled_dot_product_attention(q, k, v, scale=1.0).transpose(1, 2).double() - expected).abs().max()
    error = (native.window_attention(q, k, v, bias, 1.0).double() - expected).abs().max()
    assert torch_error > 1e-5  # the case is a hard one
    assert error <= 2 * torch_error


def test_kernel_rejects_what_it_cannot_take():
    assert native.available()
    q = torch.randn(2, 3, 49, 32)
    bias = torch.zeros(1, 3, 49, 49)
    with pytest.raises(RuntimeError, match="float32"):
        native.OP(q.double(), q.double(), q.double(), bias, 1.0)
    odd = torch.randn(2, 3, 49, 12)
    with pytest.raises(RuntimeError, match="multiple of 8"):
        native.OP(odd, odd, odd, torch.zeros(1, 3, 49, 49), 1.0)
    with pytest.raises(RuntimeError, match="bias must be"):
        native.OP(q, q, q, torch.zeros(3, 3, 49, 49), 1.0)  # 3 does not divide 2 windows
    with pytest.raises(RuntimeError, match="same"):
        native.OP(q, q, q.contiguous().transpose(2, 3).contiguous().transpose(2, 3), bias, 1.0)
    with pytest.raises(RuntimeError, match="bias must be"):
        native.OP(q, q[:, :, :7], q[:, :, :7], bias, 1.0)  # 7 keys, bias for 49


@pytest.mark.parametrize("windows,heads,tokens,head_dim,bias_windows,grad_windows", [
    (8, 3, 49, 32, 4, 4), (8, 3, 49, 32, 4, 1), (6, 2, 13, 16, 1, 1), (4, 1, 8, 8, 2, 2), (3, 2, 98, 64, 0, 0),
    (2, 1, 196, 32, 1, 0), (5, 2, 1, 8, 5, 5), (1, 1, 9, 8, 1, 1)])  # the last: one thread's accumulator only
def test_backward_matches_float64_autograd(windows, heads, tokens, head_dim, bias_windows, grad_windows):
    generator = torch.Generator().manual_seed(tokens + 1000 * bias_windows + grad_windows)
    qkv = torch.randn(windows, tokens, 3 * heads * head_dim, generator=generator)
    bias = torch.randn(bias_windows, heads, tokens, tokens, generator=generator) if bias_windows else None
    grad_out = torch.randn(windows, tokens, heads, head_dim, generator=generator)
    scale = head_dim ** -0.5
    qkv64 = qkv.double().requires_grad_()
    bias64 = None if bias is None else bias.double().requires_grad_()
    reference(*wa.split_heads(qkv64, heads), bias64, scale).backward(grad_out.double())
    grad_qkv = torch.full_like(qkv, float("nan"))
    q, k, v = wa.split_heads(qkv, heads)
    assert native.backward_applies(grad_out.transpose(1, 2), q, k, v, bias)
    grad_bias = native.window_attention_backward_(*wa.split_heads(grad_qkv, heads), grad_out.transpose(1, 2),
                                                  q, k, v, bias, scale, grad_windows)
    torch.testing.assert_close(grad_qkv.double(), qkv64.grad, atol=1e-5, rtol=1e-5)
    assert grad_bias.shape == (grad_windows, heads, tokens, tokens)
    if grad_windows:
        expected = bias64.grad.view(-1, grad_windows, heads, tokens, tokens).sum(0)
        torch.testing.assert_close(grad_bias.double(), expected, atol=1e-5, rtol=1e-5)


def test_backward_rejects_what_it_cannot_take():
    q = torch.randn(4, 3, 49, 32)
    grads = [torch.empty_like(q) for _ in range(3)]
    assert not native.backward_applies(q, q, q[:, :, :7], q[:, :, :7])  # keys other than the queries
    with pytest.raises(RuntimeError, match="float32"):
        native.BACKWARD_OP(*grads, q, q.double(), q, q, None, 1.0, 0)
    with pytest.raises(RuntimeError, match="bias must be"):
        native.BACKWARD_OP(*grads, q, q, q, q, torch.zeros(3, 3, 49, 49), 1.0, 0)
    with pytest.raises(RuntimeError, match="grad_bias_windows must divide 4"):
        native.BACKWARD_OP(*grads, q, q, q, q, None, 1.0, 3)
    with pytest.raises(RuntimeError, match="same strides"):
        native.BACKWARD_OP(grads[0], grads[1], grads[2].transpose(0, 1).contiguous().transpose(0, 1), q, q, q, q,
                           None, 1.0, 0)


@pytest.mark.parametrize("name,kwargs,shape", [
    ("swin_t", dict(img_size=64, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4, num_classes=5),
     (2, 3, 64, 64)),
    ("video_swin_t", dict(embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=(2, 4, 4), num_classes=5),
     (1, 3, 4, 32, 32)),
])
def test_training_gradients_match_without_backward_kernel(monkeypatch, name, kwargs, shape):
    """The whole model's gradients (relative position tables included, shifted blocks with their masks) with the
    backward kernel and with the PyTorch recomputation it replaces."""
    torch.manual_seed(0)
    model = swinkit.create_model(name, drop_path_rate=0.0, **kwargs).train()
    for module in model.modules():  # no randomness between the two passes (Video Swin's head has dropout)
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    x, target = torch.randn(shape), torch.tensor([1, 3][:shape[0]])
    calls = []
    real = native.window_attention_backward_
    monkeypatch.setattr(native, "window_attention_backward_",
                        lambda *args: calls.append(args[3].shape) or real(*args))

    def gradients():
        model.zero_grad()
        F.cross_entropy(model(x), target).backward()
        return {key: p.grad.clone() for key, p in model.named_parameters()}

    fast = gradients()
    assert len(calls) == 4  # every block of both stages
    monkeypatch.setattr(native, "backward_applies", lambda *args: False)
    plain = gradients()
    assert len(calls) == 4
    for key in plain:
        torch.testing.assert_close(fast[key], plain[key], atol=1e-5, rtol=1e-4, msg=key)


def test_backward_kernel_counts_the_flops_of_the_path_it_replaces(monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    from swinkit.deploy.info import flop_formulas
    torch.manual_seed(0)
    model = swinkit.create_model("swin_t", img_size=64, embed_dim=32, depths=(2, 2), num_heads=(2, 4),
                                 window_size=4, num_classes=5, drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 64, 64)

    def step_flops() -> int:
        with FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter:
            model(x).sum().backward()
        return counter.get_total_flops()

    with_kernel = step_flops()
    monkeypatch.setattr(native, "backward_applies", lambda *args: False)
    assert with_kernel == step_flops() > 0


def count_native_calls(monkeypatch) -> list:
    calls = []
    real = native.window_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(native, "window_attention", spy)
    return calls


def test_window_sdpa_dispatch(monkeypatch):
    calls = count_native_calls(monkeypatch)
    generator = torch.Generator().manual_seed(1)
    q, k, v = qkv_views(8, 3, 49, 32, generator)
    bias = torch.randn(3, 49, 49, generator=generator)
    with torch.inference_mode():
        fast = wa.window_sdpa(q, k, v, bias, 0.2)
    assert len(calls) == 1
    with torch.inference_mode():
        wa.window_sdpa(q.double(), k.double(), v.double(), bias.double(), 0.2)  # fp64: the PyTorch paths
        wa.window_sdpa(*qkv_views(8, 2, 49, 12, generator), bias[:2], 0.2)  # head_dim 12
    q_grad = q.clone().requires_grad_()
    slow = wa.window_sdpa(q_grad, k, v, bias, 0.2)  # autograd through the attention: no kernel backward
    assert len(calls) == 1
    torch.testing.assert_close(fast, slow.detach(), atol=2e-6, rtol=1e-5)


def test_swin_model_uses_kernel_and_matches_without(monkeypatch):
    torch.manual_seed(0)
    model = swinkit.create_model("swin_t", img_size=64, embed_dim=32, depths=(2, 2), num_heads=(2, 4),
                                 window_size=4, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    calls = count_native_calls(monkeypatch)
    with torch.inference_mode():
        fast = model(x)
    assert len(calls) == 4  # every block of both stages
    monkeypatch.setitem(native._state, "built", False)  # as where it cannot be built
    with torch.inference_mode():
        plain = model(x)
    assert len(calls) == 4
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_shunted_model_uses_kernel_and_matches_without(monkeypatch):
    torch.manual_seed(0)
    model = swinkit.create_model("shunted_t", num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    calls = count_native_calls(monkeypatch)
    with torch.inference_mode():
        fast = model(x)
    assert len(calls) == 15  # both branches of the 7 blocks of stages 1-3, the one of the stage-4 block
    monkeypatch.setitem(native._state, "built", False)
    with torch.inference_mode():
        plain = model(x)
    assert len(calls) == 15
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("SWINKIT_NATIVE", "0")
    assert not native.enabled()
    monkeypatch.setenv("SWINKIT_NATIVE", "1")
    assert native.enabled()


def test_failed_build_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("SWINKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "SOURCES", (tmp_path / "missing.cpp",))
    with pytest.warns(RuntimeWarning, match="could not be built"):
        assert native._build() is False
