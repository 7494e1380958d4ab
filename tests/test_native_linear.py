"""swinkit's compiled CPU linear kernel (swinkit/csrc/linear.cpp): checked against float64 products over
the shapes its blocking cuts differently (row tiles of 6, channel panels of 16, input blocks of 256, row
blocks of up to 264 split over threads), in place, on strided views; refused where it does not apply; and
used by the models' inference paths with the same outputs as without it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import swinkit
from swinkit.layers import native
from swinkit.layers.merging import PatchMerging
from swinkit.layers.mlp import Mlp
from swinkit.layers.workspace import affine_into, linear, linear_add_, norm_linear_into


def float64_linear(x, weight, bias):
    out = x.double() @ weight.double().t()
    return out if bias is None else out + bias.double()


def assert_fp32_close(ours, reference, x, weight):
    """Within a few times the error of PyTorch's own fp32 product (the bound scales with the inputs)."""
    theirs = (x @ weight.t()).double()
    scale = (x.double().abs() @ weight.double().abs().t()).max().item() + 1.0
    bound = 4 * (theirs - (x.double() @ weight.double().t())).abs().max().item() + 1e-6 * scale
    assert (ours.double() - reference).abs().max().item() <= bound


@pytest.mark.parametrize("rows", [1, 5, 6, 7, 49, 196, 263, 265, 600])
@pytest.mark.parametrize("inputs,outputs", [(1, 1), (3, 17), (8, 16), (96, 288), (257, 15), (768, 40), (100, 1000),
                                            (1001, 24)])
def test_matches_float64(rows, inputs, outputs):
    generator = torch.Generator().manual_seed(rows * 1000 + inputs * 7 + outputs)
    x = torch.randn(rows, inputs, generator=generator)
    weight = torch.randn(outputs, inputs, generator=generator)
    bias = torch.randn(outputs, generator=generator)
    out = torch.full((rows, outputs), float("nan"))
    native.linear_(out, x, weight, bias)
    assert_fp32_close(out, float64_linear(x, weight, bias), x, weight)
    start = torch.randn(rows, outputs, generator=generator)
    acc = start.clone()
    native.linear_(acc, x, weight, None, accumulate=True)
    assert_fp32_close(acc, start.double() + float64_linear(x, weight, None), x, weight)


def test_strided_views_and_accumulate_with_bias():
    generator = torch.Generator().manual_seed(1)
    qkv = torch.randn(98, 3 * 64, generator=generator)
    x = qkv[:, 64:128]  # a column block: rows 192 floats apart
    weight = torch.randn(48, 64, generator=generator)
    bias = torch.randn(48, generator=generator)
    big = torch.randn(98, 100, generator=generator)
    acc = big[:, 10:58]  # written through a strided view: the columns around it stay as they were
    before = big.clone()
    native.linear_(acc, x, weight, bias, accumulate=True)
    assert_fp32_close(acc, before[:, 10:58].double() + float64_linear(x, weight, bias), x, weight)
    torch.testing.assert_close(big[:, :10], before[:, :10], rtol=0, atol=0)
    torch.testing.assert_close(big[:, 58:], before[:, 58:], rtol=0, atol=0)


def test_same_bits_for_any_thread_count():
    generator = torch.Generator().manual_seed(2)
    x, weight = torch.randn(600, 384, generator=generator), torch.randn(96, 384, generator=generator)
    bias = torch.randn(96, generator=generator)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(native.linear_(torch.empty(600, 96), x, weight, bias))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])  # each output is one tile's sum, in k order


def test_errors_name_what_was_expected():
    x, weight, out = torch.randn(4, 8), torch.randn(16, 8), torch.empty(4, 16)
    with pytest.raises(RuntimeError, match="x must be a float32"):
        native.LINEAR_OP(out, x.double(), weight, None, False)
    with pytest.raises(RuntimeError, match=r"weight must be a contiguous float32 CPU \(out_features, 8\)"):
        native.LINEAR_OP(out, x, torch.randn(8, 16).t(), None, False)
    with pytest.raises(RuntimeError, match=r"out must be a float32 CPU \(4, 16\)"):
        native.LINEAR_OP(torch.empty(4, 15), x, weight, None, False)
    with pytest.raises(RuntimeError, match="bias must be a contiguous float32"):
        native.LINEAR_OP(out, x, weight, torch.randn(15), False)


def test_applies_only_without_autograd_in_fp32_eager():
    x, out = torch.randn(4, 8), torch.empty(4, 16)
    weight = torch.randn(16, 8, requires_grad=True)
    assert not native.linear_applies(out, x, weight, None)  # autograd would need to see the product
    with torch.no_grad():
        assert native.linear_applies(out, x, weight, None)
        assert not native.linear_applies(out.double(), x.double(), weight.double(), None)
        assert not native.linear_applies(out, x.t().contiguous().t(), weight, None)  # x column-major
        assert not native.linear_applies(torch.empty(0, 16), torch.empty(0, 8), weight, None)


def test_workspace_products_go_through_kernel(monkeypatch):
    calls = count_linear_calls(monkeypatch)
    linear = torch.nn.Linear(8, 16)
    x = torch.randn(10, 8)
    with torch.no_grad():
        out = affine_into(torch.empty(10, 16), x, linear.weight, linear.bias)
        acc = linear_add_(torch.ones(10, 16), x, linear)
        expected = linear(x)
    assert calls == [False, True]
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(acc, expected + 1)


def test_linear_runs_leading_axes_on_kernel_and_falls_back_with_autograd(monkeypatch):
    calls = count_linear_calls(monkeypatch)
    layer = torch.nn.Linear(24, 40)
    x = torch.randn(2, 3, 7, 24)
    with torch.no_grad():
        out = linear(x, layer.weight, layer.bias)
        no_bias = linear(x[..., ::2, :], layer.weight[:16], None)  # strided rows: copied once by reshape
        expected, expected_no_bias = layer(x), x[..., ::2, :] @ layer.weight[:16].t()
    assert calls == [False, False] and out.shape == (2, 3, 7, 40) and no_bias.shape == (2, 3, 4, 16)
    assert_fp32_close(out.reshape(-1, 40), float64_linear(x.reshape(-1, 24), layer.weight, layer.bias),
                      x.reshape(-1, 24), layer.weight)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(no_bias, expected_no_bias)
    trained = linear(x, layer.weight, layer.bias)  # autograd on: PyTorch's product, gradients reach the weight
    trained.sum().backward()
    assert calls == [False, False] and layer.weight.grad is not None
    with torch.no_grad():
        assert linear(x.double(), layer.weight.double(), None).dtype == torch.float64 and len(calls) == 2
        assert linear(torch.randn(24), layer.weight, layer.bias).shape == (40,) and len(calls) == 2


def test_shunted_and_merging_products_use_kernel(monkeypatch):
    """The products outside the blocks' residual paths: Shunted's q, k/v halves, output projection and
    strided-conv patches, and PatchMerging's reduction."""
    calls = count_linear_calls(monkeypatch)
    attention = swinkit.create_model("shunted_t", num_classes=5).eval().block1[0].attn
    merging = PatchMerging(16).eval()
    with torch.inference_mode():
        attention(torch.randn(1, 64, 64), (8, 8))  # sr 8: two aggregated branches
        assert len(calls) == 1 + 2 * (1 + 2) + 1
        merging(torch.randn(1, 6, 6, 16))
        assert len(calls) == 9
    assert not any(calls)


def count_linear_calls(monkeypatch, record: str = "accumulate") -> list:
    """Spy on native.linear_: one entry per call, its ``accumulate`` flag (its ``norm`` with record="norm")."""
    calls = []
    real = native.linear_

    def spy(out, x, weight, bias, accumulate=False, gelu=False, norm=None):
        calls.append(norm if record == "norm" else accumulate)
        return real(out, x, weight, bias, accumulate, gelu, norm)

    monkeypatch.setattr(native, "linear_", spy)
    return calls


@pytest.mark.parametrize("name,kwargs,shape", [
    ("swin_t", dict(img_size=64, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4, num_classes=5),
     (2, 3, 64, 64)),
    ("swin_t", dict(img_size=56, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=7, num_classes=5),
     (1, 3, 56, 56)),  # stage 2 is one 7x7 window: its tokens are copied, then updated in place
    ("video_swin_t", dict(embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=(2, 4, 4), num_classes=5),
     (1, 3, 4, 32, 32)),
    ("shunted_t", dict(num_classes=5), (1, 3, 64, 64)),
])
def test_models_use_kernel_and_match_without(monkeypatch, name, kwargs, shape):
    torch.manual_seed(0)
    model = swinkit.create_model(name, **kwargs).eval()
    x = torch.randn(shape)
    calls = count_linear_calls(monkeypatch)
    with torch.inference_mode():
        fast = model(x)
    assert len(calls) > 0 and any(calls)  # products, and residuals accumulated in place
    count = len(calls)
    monkeypatch.setattr(native, "linear_applies", lambda *args: False)  # as where the kernel is off
    with torch.inference_mode():
        plain = model(x)
    assert len(calls) == count
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_stage_leaves_its_input_alone_when_tokens_are_already_in_window_order():
    torch.manual_seed(0)
    model = swinkit.create_model("swin_t", img_size=56, embed_dim=32, depths=(2, 2), num_heads=(2, 4),
                                 window_size=7, num_classes=5).eval()
    stage = model.layers[1]
    x = torch.randn(1, 7, 7, 64)
    before = x.clone()
    with torch.inference_mode():
        first, second = stage(x), stage(x)
    torch.testing.assert_close(x, before, rtol=0, atol=0)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert first.data_ptr() != second.data_ptr()  # not a workspace buffer handed out twice


@pytest.mark.parametrize("rows,inputs,outputs", [(1, 96, 288), (7, 5, 17), (49, 300, 40), (600, 192, 96),
                                               (13, 777, 40)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_on_the_way_in_matches_float64(rows, inputs, outputs, affine):
    """The kernel's LayerNorm of x's rows as it packs them (row blocks or output-channel groups, input blocks
    of 256: 777 = 3 x 256 + 9; inputs not a multiple of 8), with and without the norm's affine parameters."""
    generator = torch.Generator().manual_seed(rows + inputs + outputs)
    norm = torch.nn.LayerNorm(inputs, eps=1e-6, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.copy_(torch.randn(inputs, generator=generator))
            norm.bias.copy_(torch.randn(inputs, generator=generator))
    x = torch.randn(rows, inputs, generator=generator) * 3 + 1
    weight = torch.randn(outputs, inputs, generator=generator)
    bias = torch.randn(outputs, generator=generator)
    with torch.no_grad():
        normed = norm(x)
        out = native.linear_(torch.full((rows, outputs), float("nan")), x, weight, bias, norm=norm)
        gelu = native.linear_(torch.empty(rows, outputs), x, weight, bias, gelu=True, norm=norm)
    reference = F.layer_norm(x.double(), (inputs,), None if not affine else norm.weight.double(),
                             None if not affine else norm.bias.double(), 1e-6)
    assert_fp32_close(out, float64_linear(reference, weight, bias), normed, weight)
    assert torch.equal(gelu, native.gelu_(out, out))


def test_norm_linear_into_and_hidden_into_fall_back_to_the_modules(monkeypatch):
    calls = count_linear_calls(monkeypatch)
    mlp = Mlp(16, 64)
    norm = torch.nn.LayerNorm(16)
    x = torch.randn(10, 16)
    with torch.no_grad():
        expected, expected_hidden = mlp.fc1(norm(x)), F.gelu(mlp.fc1(norm(x)))
        fused = norm_linear_into(torch.empty(10, 64), x, norm, mlp.fc1)
        fused_hidden = mlp.hidden_into(torch.empty(10, 64), x, norm)
        seen = []
        norm.register_forward_hook(lambda *args: seen.append(True))  # a hooked norm runs as a module
        hooked = norm_linear_into(torch.empty(10, 64), x, norm, mlp.fc1)
        hooked_hidden = mlp.hidden_into(torch.empty(10, 64), x, norm)
    assert seen == [True, True] and len(calls) == 4
    for ours, theirs in ((fused, expected), (hooked, expected), (fused_hidden, expected_hidden),
                         (hooked_hidden, expected_hidden)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert not native.norm_applies(torch.nn.LayerNorm(8), x)  # over other features
    assert not native.norm_applies(torch.nn.LayerNorm(16), x)  # its parameters need gradients (grad mode on)
    with torch.no_grad():
        assert not native.norm_applies(torch.nn.LayerNorm(16).double(), x)
        assert not native.norm_applies(torch.nn.BatchNorm1d(16), x)


def test_norm_parameters_are_checked():
    x, weight, out = torch.randn(4, 8), torch.randn(16, 8), torch.empty(4, 16)
    with pytest.raises(RuntimeError, match=r"norm_weight must be a contiguous float32 \(8,\)"):
        native.LINEAR_OP(out, x, weight, None, False, False, True, torch.randn(7), None, 1e-5)
    with pytest.raises(RuntimeError, match=r"norm_bias must be a contiguous float32 \(8,\)"):
        native.LINEAR_OP(out, x, weight, None, False, False, True, None, torch.randn(8).double(), 1e-5)


def test_patch_merging_normalises_in_the_product_without_autograd(monkeypatch):
    """PatchMerging's LayerNorm over 4C runs inside the reduction's product in inference (layer_norm_linear ->
    workspace.linear); a hooked norm runs as a module, and both match the PyTorch path."""
    norms = count_linear_calls(monkeypatch, record="norm")
    torch.manual_seed(0)
    merging = PatchMerging(24)
    with torch.no_grad():
        merging.norm.weight.normal_()
        merging.norm.bias.normal_()
    x = torch.randn(2, 7, 10, 24) * 2 + 1  # odd height: zero-padded first
    with torch.no_grad():
        fused = merging(x)
        seen = []
        hook = merging.norm.register_forward_hook(lambda *args: seen.append(True))
        hooked = merging(x)
        hook.remove()
        monkeypatch.setattr(native, "linear_applies", lambda *args: False)  # as where the kernel is off
        plain = merging(x)
    assert norms == [merging.norm, None] and seen == [True]
    assert fused.shape == (2, 4, 5, 48)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hooked, plain, rtol=1e-5, atol=1e-5)
