"""swinkit's compiled depthwise 3x3 convolution (swinkit/csrc/depthwise.cpp): checked against float64 convolution
over map sizes whose edges and channel blocks it cuts differently, with and without the residual and the GELU;
refused where it does not apply; and used by Shunted's inference with the same outputs as without it."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import swinkit
from swinkit.layers import native
from swinkit.models.shunted import depthwise_residual


def reference(x, weight, bias, residual, gelu):
    """float64 act(x + conv(x)) on channels-last x (B, H, W, C)."""
    x64 = x.double().permute(0, 3, 1, 2)
    out = F.conv2d(x64, weight.double(), None if bias is None else bias.double(), padding=1, groups=x.shape[3])
    out = out + x64 if residual else out
    return (F.gelu(out) if gelu else out).permute(0, 2, 3, 1)


@pytest.mark.parametrize("shape", [(1, 1, 1, 8), (2, 1, 5, 16), (1, 4, 1, 24), (2, 3, 2, 40), (1, 7, 7, 64),
                                   (3, 9, 6, 104)])
@pytest.mark.parametrize("residual,gelu", [(False, False), (True, False), (True, True), (False, True)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_float64_convolution(shape, residual, gelu, with_bias):
    generator = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=generator)
    weight = torch.randn(shape[3], 1, 3, 3, generator=generator)
    bias = torch.randn(shape[3], generator=generator) if with_bias else None
    out = torch.full_like(x, float("nan"))
    native.depthwise_conv3x3_(out, x, weight, bias, residual, gelu)
    torch.testing.assert_close(out.double(), reference(x, weight, bias, residual, gelu), rtol=0, atol=2e-6)


def test_errors_name_what_was_expected():
    x, weight, out = torch.randn(1, 4, 4, 16), torch.randn(16, 1, 3, 3), torch.empty(1, 4, 4, 16)
    with pytest.raises(RuntimeError, match="channels a multiple of 8"):
        native.DEPTHWISE_OP(torch.empty(1, 4, 4, 12), torch.randn(1, 4, 4, 12), torch.randn(12, 1, 3, 3), None,
                            False, False)
    with pytest.raises(RuntimeError, match=r"weight must be a contiguous float32 \(16, 1, 3, 3\)"):
        native.DEPTHWISE_OP(out, x, torch.randn(16, 1, 5, 5), None, False, False)
    with pytest.raises(RuntimeError, match=r"out must be a contiguous float32 CPU tensor of shape \[1, 4, 4, 16\]"):
        native.DEPTHWISE_OP(torch.empty(1, 4, 4, 8), x, weight, None, False, False)
    with pytest.raises(RuntimeError, match=r"bias must be a contiguous float32 \(16,\)"):
        native.DEPTHWISE_OP(out, x, weight, torch.randn(15), False, False)
    with pytest.raises(RuntimeError, match="out must not be x"):
        native.DEPTHWISE_OP(x, x, weight, None, True, False)


def test_depthwise_residual_falls_back_where_the_kernel_does_not_apply(monkeypatch):
    calls = []
    real = native.depthwise_conv3x3_
    monkeypatch.setattr(native, "depthwise_conv3x3_", lambda *a, **k: calls.append(k["gelu"]) or real(*a, **k))
    torch.manual_seed(0)
    grid = (5, 6)
    for channels, dtype in ((16, torch.float32), (12, torch.float32), (16, torch.float64)):
        conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels).to(dtype)
        tokens = torch.randn(2, 30, channels, dtype=dtype)
        expected = F.gelu(conv(tokens.transpose(1, 2).reshape(2, channels, *grid)).flatten(2).transpose(1, 2) + tokens)
        with torch.no_grad():
            torch.testing.assert_close(depthwise_residual(conv, tokens, grid, gelu=True), expected)
    assert calls == [True]  # 12 channels and float64 ran PyTorch's convolution
    seen = []
    conv.register_forward_hook(lambda *args: seen.append(True))
    conv.float()
    with torch.no_grad():
        depthwise_residual(conv, torch.randn(2, 30, 16), grid)
    assert seen == [True] and calls == [True]  # a hooked conv runs as a module


def test_shunted_inference_uses_the_kernel_and_matches_without(monkeypatch):
    torch.manual_seed(0)
    model = swinkit.create_model("shunted_t", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    calls = []
    real = native.depthwise_conv3x3_
    monkeypatch.setattr(native, "depthwise_conv3x3_", lambda *a, **k: calls.append(k["gelu"]) or real(*a, **k))
    with torch.inference_mode():
        fast = model(x)
    assert True in calls and False in calls  # the MLPs (with the GELU) and v's local enhancement (without)
    real_applies = native.depthwise_applies
    monkeypatch.setattr(native, "depthwise_applies", lambda *args: False)
    with torch.inference_mode():
        plain = model(x)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    seen = []
    model.block1[0].mlp.dwconv.register_forward_hook(lambda *args: seen.append(True))
    monkeypatch.setattr(native, "depthwise_applies", real_applies)
    with torch.inference_mode():
        hooked = model(x)
    assert seen == [True]  # a hooked MLP convolution runs as a module
    torch.testing.assert_close(hooked, fast, rtol=1e-5, atol=1e-5)
