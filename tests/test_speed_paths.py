"""The fast paths compute what the plain ones do: token reordering, cached biases, chunked in-place
inference, memory-saving autograd functions, and the benchmark helpers (correctness, not timings)."""
import json

import pytest
import torch
import torch.nn.functional as F

import swinkit
from swinkit.cli import main as cli_main
from swinkit.layers import recompute, window_attention
from swinkit.layers.recompute import LayerNormLinear, NormMlp
from swinkit.layers.window_attention import BiasedWindowAttention, gather_bias, window_sdpa
from swinkit.layers.windows import gather_tokens, layout_change, window_order, window_partition
from swinkit.layers.workspace import Workspace
from swinkit.models import swin
from swinkit.tools import bench

SMALL_2D = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4, num_classes=7)
SMALL_3D = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=(2, 4, 4), num_classes=7)


def _official_windows(x, window, shift, roll_before_pad):
    """The official block's pad / roll / partition on x (B, *grid, C), flattened to (B, slots, C)."""
    grid = x.shape[1:-1]
    padded = [-(-g // w) * w for g, w in zip(grid, window)]
    pad = []
    for g, p in zip(reversed(grid), reversed(padded)):
        pad += [0, p - g]
    axes = tuple(range(1, 1 + len(grid)))
    if roll_before_pad and any(shift):
        x = torch.roll(x, [-s for s in shift], axes)
    x = F.pad(x, [0, 0] + pad)
    if not roll_before_pad and any(shift):
        x = torch.roll(x, [-s for s in shift], axes)
    return window_partition(x, tuple(window)).flatten(1, 2)


@pytest.mark.parametrize("grid,window,shift", [((8, 12), (4, 3), (2, 1)), ((7, 10), (4, 4), (2, 2)),
                                               ((4, 6, 6), (2, 3, 3), (1, 1, 1)), ((3, 5, 7), (2, 4, 4), (1, 2, 2))])
@pytest.mark.parametrize("roll_before_pad", [False, True])
def test_window_order_is_pad_roll_partition(grid, window, shift, roll_before_pad):
    x = torch.randn(2, *grid, 3)
    expected = _official_windows(x, window, shift, roll_before_pad)
    flat = torch.cat([x.flatten(1, -2), torch.zeros(2, 1, 3)], dim=1)  # id prod(grid) = a zero token
    order = window_order(grid, window, shift, roll_before_pad)
    assert torch.equal(flat[:, order], expected)


@pytest.mark.parametrize("grid,window,shift", [((8, 12), (4, 3), (2, 1)), ((4, 14, 14), (2, 7, 7), (1, 3, 3))])
def test_layout_change_moves_between_layouts(grid, window, shift):
    x = torch.randn(3, *grid, 5)
    flat = x.flatten(1, -2)
    plain, shifted = (window, (0,) * len(grid), False), (window, shift, False)
    a = gather_tokens(flat, layout_change(grid, None, plain))
    b = gather_tokens(a, layout_change(grid, plain, shifted))
    assert torch.equal(b, _official_windows(x, window, shift, False))
    assert torch.equal(gather_tokens(b, layout_change(grid, shifted, None)), flat)
    assert layout_change(grid, plain, plain) is None
    # with autograd: the gradient (gathered back through the inverse permutation) is index_select's
    leaf = flat.detach().double().requires_grad_()
    weights = torch.randn(flat.shape, dtype=torch.float64)
    (gather_tokens(leaf, layout_change(grid, plain, shifted)) * weights).sum().backward()
    reference = leaf.detach().clone().requires_grad_()
    index = layout_change(grid, plain, shifted)
    (reference[:, index] * weights).sum().backward()
    assert torch.equal(leaf.grad, reference.grad)
    with pytest.raises(ValueError, match="unpadded"):
        layout_change((5, 5), None, ((4, 4), (0, 0), False))


def _block_hooks(model):
    """A no-op hook on every block forces the grid-ordered (roll / partition) path."""
    return [blk.register_forward_hook(lambda *a: None) for stage in model.layers for blk in stage.blocks]


def _pair(name, overrides, input_shape, dtype=torch.float64):
    torch.manual_seed(0)
    model = swinkit.create_model(name, **overrides).to(dtype)
    with torch.no_grad():  # non-zero bias tables and norms so that every term matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model, torch.randn(input_shape, dtype=dtype)


CASES = [("swin_t", SMALL_2D, (2, 3, 64, 64)), ("swin_t", {**SMALL_2D, "compat": "timm", "img_size": 64},
                                                 (2, 3, 64, 64)),
         ("video_swin_t", SMALL_3D, (2, 3, 8, 64, 64)), ("video_swin_t", SMALL_3D, (1, 3, 4, 32, 48))]


@pytest.mark.parametrize("name,overrides,shape", CASES)
@pytest.mark.parametrize("chunk_tokens", [48, 4096])
def test_inference_fast_path_equals_grid_path(name, overrides, shape, chunk_tokens, monkeypatch):
    monkeypatch.setattr(swin, "CHUNK_ELEMENTS", chunk_tokens * 4 * overrides["embed_dim"])  # stage-1 tokens
    model, x = _pair(name, overrides, shape)
    model.eval()
    before = x.clone()
    with torch.inference_mode():
        fast = model.forward_features(x, out_indices=range(2))
        again = model.forward_features(x[:1], out_indices=range(2))  # the workspace is reused, then grown
        bigger = model.forward_features(torch.cat([x, x]), out_indices=range(2))
        hooks = _block_hooks(model)
        slow = model.forward_features(x, out_indices=range(2))
    for h in hooks:
        h.remove()
    assert torch.equal(x, before)
    for f, a, b, s in zip(fast, again, bigger, slow):
        torch.testing.assert_close(f, s, atol=1e-12, rtol=0)
        torch.testing.assert_close(a, s[:1], atol=1e-12, rtol=0)
        torch.testing.assert_close(b, torch.cat([s, s]), atol=1e-12, rtol=0)
    assert all(f.data_ptr() != a.data_ptr() for f, a in zip(fast, again))  # outputs never alias the workspace


@pytest.mark.parametrize("samples_per_group", [1, 64])
def test_shunted_inplace_inference_equals_the_autograd_path(samples_per_group, monkeypatch):
    from swinkit.models import shunted
    model, x = _pair("shunted_t", dict(embed_dims=(16, 32, 64, 128), num_heads=(2, 2, 4, 8), num_classes=5),
                     (3, 3, 64, 48))
    monkeypatch.setattr(shunted, "INPLACE_CHUNK_ELEMENTS", samples_per_group * 16 * 8 * 16 * 12)
    model.eval()
    before = x.clone()
    with torch.no_grad():
        fast = model.forward_features(x, out_indices=range(4))
    with torch.enable_grad():
        slow = model.forward_features(x, out_indices=range(4))
    assert torch.equal(x, before)
    for f, s in zip(fast, slow):
        torch.testing.assert_close(f, s.detach(), atol=1e-12, rtol=0)


def _plain_attention(q, k, v, bias, scale, mask=None):
    count, heads, tokens, _ = q.shape
    if mask is not None:
        bias = bias + mask.unsqueeze(1)
    groups = bias.shape[0] if bias.dim() == 4 else 1
    logits = (q * scale) @ k.transpose(-2, -1)
    logits = (logits.view(-1, groups, heads, tokens, tokens) + bias).view(count, heads, tokens, tokens)
    return (logits.softmax(-1) @ v).transpose(1, 2)


class _Plain:
    """Stand-ins for the memory-saving autograd functions: the same maths through plain autograd."""

    class Attention:
        @staticmethod
        def apply(qkv, bias, mask, heads, scale, combined=None, index=None, workspace=None):
            table_rows = bias if index is None else gather_bias(bias, index)
            return _plain_attention(*window_attention.split_heads(qkv, heads), table_rows, scale, mask)

    class NormMlp:
        @staticmethod
        def apply(x, nw, nb, w1, b1, w2, b2, eps, approximate, workspace, keep_hidden=True):
            hidden = F.linear(F.layer_norm(x, (x.shape[-1],), nw, nb, eps), w1, b1)
            return F.linear(F.gelu(hidden, approximate=approximate), w2, b2)

    class LayerNormLinear:
        @staticmethod
        def apply(x, nw, nb, w, b, eps):
            return F.linear(F.layer_norm(x, (x.shape[-1],), nw, nb, eps), w, b)


@pytest.mark.parametrize("name,overrides,shape", CASES[:3])
@pytest.mark.parametrize("flipped", [False, True])
def test_training_gradients_equal_plain_autograd(name, overrides, shape, flipped, monkeypatch):
    """``flipped``: every block's keep_mlp_hidden the other way round, and the attention backward
    two windows at a time (groups smaller than a sample's windows)."""
    model, x = _pair(name, {**overrides, "drop_path_rate": 0.0, "head_drop_rate": 0.0}, shape)
    model.train()
    if flipped:
        monkeypatch.setattr(window_attention, "ATTENTION_CHUNK_ELEMENTS", 2 * 2 * 32 ** 2)
        for stage in model.layers:
            for block in stage.blocks:
                block.keep_mlp_hidden = not block.keep_mlp_hidden
    weights = torch.randn(shape[0], 7, dtype=torch.float64)

    def grads():
        model.zero_grad(set_to_none=True)
        out = model(x)
        (out * weights).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    fast_out, fast = grads()
    monkeypatch.setattr(window_attention, "BiasedWindowAttention", _Plain.Attention)
    monkeypatch.setattr(recompute, "LayerNormLinear", _Plain.LayerNormLinear)
    monkeypatch.setattr(recompute, "NormMlp", _Plain.NormMlp)
    hooks = _block_hooks(model)
    plain_out, plain = grads()
    for h in hooks:
        h.remove()
    torch.testing.assert_close(fast_out, plain_out, atol=1e-12, rtol=0)
    assert fast.keys() == plain.keys()
    for name_ in fast:
        torch.testing.assert_close(fast[name_], plain[name_], atol=1e-10, rtol=1e-9, msg=name_)
    assert any("relative_position_bias_table" in n and fast[n].abs().sum() > 0 for n in fast)


@pytest.mark.parametrize("bias_shape,with_mask", [((2, 3, 3), False), ((2, 2, 3, 3), False), ((2, 3, 3), True),
                                                  ((2, 2, 3, 3), True)])
@pytest.mark.parametrize("windows_per_group", [1, 2, 4])
def test_autograd_functions_gradcheck(bias_shape, with_mask, windows_per_group, monkeypatch):
    monkeypatch.setattr(window_attention, "ATTENTION_CHUNK_ELEMENTS", windows_per_group * 2 * 3 * 3)
    torch.manual_seed(0)
    qkv = torch.randn(4, 3, 3 * 2 * 2, dtype=torch.float64, requires_grad=True)  # 4 windows, 3 tokens, 2 heads of 2
    bias = torch.randn(*bias_shape, dtype=torch.float64, requires_grad=True)
    mask = torch.randn(2, 3, 3, dtype=torch.float64) if with_mask else None  # 2 windows per sample, no gradient
    attention = lambda *a: BiasedWindowAttention.apply(*a, mask, 2, 0.5)  # noqa: E731
    assert torch.autograd.gradcheck(attention, (qkv, bias), fast_mode=True)
    workspace = Workspace()  # the recomputed attention weights in reused buffers
    in_workspace = lambda *a: BiasedWindowAttention.apply(*a, mask, 2, 0.5, None, None, workspace)  # noqa: E731
    assert torch.autograd.gradcheck(in_workspace, (qkv, bias), fast_mode=True)
    assert workspace._buffers()
    q, k, v = window_attention.split_heads(qkv.detach(), 2)
    plain = _plain_attention(q, k, v, bias, 0.5, mask)
    torch.testing.assert_close(attention(qkv, bias), plain)
    combined = bias if mask is None else bias + mask.unsqueeze(1)
    torch.testing.assert_close(BiasedWindowAttention.apply(qkv, bias, mask, 2, 0.5, combined), plain)
    with torch.no_grad():
        torch.testing.assert_close(window_sdpa(q, k, v, combined, 0.5), plain)
    if len(bias_shape) == 3:  # the same bias as rows of a table (5 rows, 2 heads), gathered again in backward
        table = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
        index = torch.randint(0, 5, (3, 3))
        from_table = lambda qkv, table: BiasedWindowAttention.apply(qkv, table, mask, 2, 0.5, None, index)  # noqa: E731
        assert torch.autograd.gradcheck(from_table, (qkv, table), fast_mode=True)
        plain = _plain_attention(q, k, v, gather_bias(table, index), 0.5, mask)
        torch.testing.assert_close(from_table(qkv, table), plain)
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    norm_w, norm_b = (torch.randn(4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    w, b = torch.randn(3, 4, dtype=torch.float64, requires_grad=True), torch.randn(3, dtype=torch.float64,
                                                                                   requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: LayerNormLinear.apply(*a, 1e-5), (x, norm_w, norm_b, w, b))
    w2, b2 = (t.detach().clone().requires_grad_() for t in (w.t()[:3], b))
    workspace = Workspace()
    cases = (("none", None, True), ("tanh", workspace, True), ("none", workspace, True), ("none", None, False),
             ("tanh", workspace, False))
    for approximate, scratch, keep_hidden in cases:
        assert torch.autograd.gradcheck(lambda *a: NormMlp.apply(*a, 1e-5, approximate, scratch, keep_hidden),
                                        (x, norm_w, norm_b, w, b, w2, b2))
    assert workspace._buffers()  # the scratch buffers were used


def test_training_keeps_no_attention_bias_and_refuses_a_changed_table():
    """Training saves no (nH, N, N) or (nW, nH, N, N) bias: backward gathers it from the table
    again. The table is saved like any tensor, so changing it in place before backward is refused."""
    torch.manual_seed(0)
    model = swinkit.create_model("swin_t", **{**SMALL_2D, "drop_path_rate": 0.0}).train()
    x = torch.randn(2, 3, 32, 32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        out = model(x)
    assert saved and not [s for s in saved if len(s) >= 3 and s[-2:] == (16, 16) and s[-3] == 2]  # (.., nH, N, N)
    out.sum().backward()
    table = model.layers[0].blocks[1].attn.relative_position_bias_table
    assert table.grad.abs().sum() > 0
    out = model(x)
    with torch.no_grad():
        table.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_norm_mlp_with_frozen_parameters_matches_plain_autograd():
    """Only the inputs that require grad get one; the others are skipped, not miscomputed."""
    torch.manual_seed(0)
    args = [torch.randn(*shape, dtype=torch.float64) for shape in ((2, 5, 4), (4,), (4,), (6, 4), (6,), (3, 6), (3,))]
    for frozen in ({1, 2}, {3, 4}, {5, 6}, {0}):
        leaves = [a.clone().requires_grad_(i not in frozen) for i, a in enumerate(args)]
        NormMlp.apply(*leaves, 1e-5, "none", Workspace(), bool(len(frozen) % 2)).square().sum().backward()
        plain = [a.clone().requires_grad_(i not in frozen) for i, a in enumerate(args)]
        _Plain.NormMlp.apply(*plain, 1e-5, "none", None).square().sum().backward()
        for i, (fast, ref) in enumerate(zip(leaves, plain)):
            if i in frozen:
                assert fast.grad is None
            else:
                torch.testing.assert_close(fast.grad, ref.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("count,bias_shape", [(6, (3, 5, 5)), (6, (3, 3, 5, 5)), (6, (6, 3, 5, 5)), (2, (3, 5, 5))])
@pytest.mark.parametrize("windows_per_group", [1, 2, 6])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_head_by_head_and_fused_attention_agree(count, bias_shape, windows_per_group, dtype, monkeypatch):
    """Both kernels of window_sdpa (batched products head by head, a group of windows at a time, and
    PyTorch's fused one) give the plain softmax attention, with and without a workspace."""
    monkeypatch.setattr(window_attention, "ATTENTION_CHUNK_ELEMENTS", windows_per_group * 3 * 5 * 5)
    torch.manual_seed(0)
    qkv = torch.randn(count, 5, 3 * 3 * 4, dtype=dtype)  # 5 tokens, 3 heads of 4
    q, k, v = window_attention.split_heads(qkv, 3)
    bias = torch.randn(*bias_shape, dtype=dtype)
    plain = _plain_attention(q, k, v, bias, 0.5)
    tolerance = dict(atol=1e-12, rtol=1e-12) if dtype == torch.float64 else dict(atol=2e-6, rtol=1e-5)
    workspace = Workspace()
    for scratch in (None, workspace, workspace):  # the second call reuses the buffers
        torch.testing.assert_close(window_attention.head_by_head_attention(q, k, v, bias, 0.5, scratch), plain,
                                   **tolerance)
    assert workspace._buffers()
    head_by_head_wins = window_attention._head_by_head_wins
    assert not head_by_head_wins(q.clone().requires_grad_(), k, v, bias)  # never under autograd
    with torch.no_grad():
        # dispatch: the products for at least as many windows as heads, the fused kernel for fewer
        assert head_by_head_wins(q, k, v, bias) == (count >= 3)
        torch.testing.assert_close(window_sdpa(q, k, v, bias, 0.5, workspace=workspace), plain, **tolerance)
        monkeypatch.setattr(window_attention, "_head_by_head_wins", lambda *a: False)
        torch.testing.assert_close(window_sdpa(q, k, v, bias, 0.5), plain, **tolerance)


def test_window_sdpa_rejects_mismatched_bias():
    q = torch.randn(5, 2, 4, 8)
    with pytest.raises(ValueError, match="do not split"):
        window_sdpa(q, q, q, torch.zeros(2, 2, 4, 4), 1.0)


def test_bias_cache_follows_the_table():
    model = swinkit.create_model("swin_t", **SMALL_2D).eval()
    attn = model.layers[0].blocks[1].attn
    mask = torch.zeros(4, 16, 16)
    with torch.no_grad():
        first = attn.attention_bias((4, 4), mask)
        assert attn.attention_bias((4, 4), mask) is first  # cached
        assert first.shape == (4, 2, 16, 16)
        attn.relative_position_bias_table.add_(1.0)  # in-place update bumps the version
        second = attn.attention_bias((4, 4), mask)
    assert second is not first
    torch.testing.assert_close(second, first + 1.0)
    model.load_state_dict(swinkit.create_model("swin_t", **SMALL_2D).state_dict())
    with torch.no_grad():
        third = attn.attention_bias((4, 4), mask)
    torch.testing.assert_close(third, attn.relative_bias((4, 4)).unsqueeze(0) + mask.unsqueeze(1))
    fresh = attn.attention_bias((4, 4), mask)  # autograd on: built anew, gradients reach the table
    assert fresh.requires_grad and fresh is not third
    # in-place changes that leave the version counter alone: a fused optimiser step, a write through .data
    table = attn.relative_position_bias_table
    table.grad = torch.ones_like(table)
    torch.optim.AdamW([table], lr=0.5, fused=True).step()
    with torch.no_grad():
        fourth = attn.attention_bias((4, 4), mask)
        torch.testing.assert_close(fourth, attn.relative_bias((4, 4)).unsqueeze(0) + mask.unsqueeze(1))
        table.data.mul_(2.0)
        torch.testing.assert_close(attn.attention_bias((4, 4), mask),
                                   attn.relative_bias((4, 4)).unsqueeze(0) + mask.unsqueeze(1))


def test_block_hooks_see_grid_ordered_tensors():
    model = swinkit.create_model("swin_t", **SMALL_2D).eval()
    seen = []
    model.layers[0].blocks[1].register_forward_hook(lambda m, args, out: seen.append(tuple(out.shape)))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert seen == [(1, 16, 16, 16)]


@pytest.mark.parametrize("grid", [(8, 8), (4, 4)])  # (4, 4): one window, so the first layout is the input's
def test_stage_input_is_not_modified_in_place(grid):
    model = swinkit.create_model("swin_t", **SMALL_2D).eval()
    x = torch.randn(2, *grid, 32)
    before = x.clone()
    with torch.inference_mode():
        out = model.layers[1](x)
    assert torch.equal(x, before) and not torch.equal(out, x)


def test_bf16_autocast_stays_close_to_fp32():
    torch.manual_seed(0)
    model = swinkit.create_model("swin_t", **SMALL_2D).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.bfloat16
    assert ((low.float() - reference).norm() / reference.norm()).item() < 0.02


# ---- benchmark helpers -------------------------------------------------------------------------

def test_parse_shape_and_specs():
    assert bench.parse_shape("8x3x224x224") == (8, 3, 224, 224)
    for bad in ("8x3x224", "ax3x4x4", "0x3x4x4"):
        with pytest.raises(ValueError, match="shape"):
            bench.parse_shape(bad)
    with pytest.raises(ValueError, match="LIBRARY:NAME"):
        bench.build_model("swin_t")
    with pytest.raises(ValueError, match="unknown library"):
        bench.build_model("keras:swin_t")


def test_timings_ratios():
    timings = bench.Timings({"subject": [1.0, 2.0, 1.0], "anchor": [2.0, 2.0, 3.0]})
    ratio = timings.ratios("subject", "anchor")
    assert ratio == {"median": 2.0, "min": 1.0, "max": 3.0}


def test_runner_macs_and_steps():
    infer = bench.make_runner("swinkit:swin_t", (1, 3, 32, 32), "infer", overrides=SMALL_2D)
    assert infer.step().shape == (1, 7)
    x = torch.empty(1, 3, 32, 32, device="meta")
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        meta_model = swinkit.create_model("swin_t", **SMALL_2D)
    with FlopCounterMode(display=False) as counter:
        meta_model(x)
    assert bench.count_macs(infer) == pytest.approx(counter.get_total_flops() / 2, rel=1e-6)
    train = bench.make_runner("swinkit:swin_t", (2, 3, 32, 32), "train", overrides=SMALL_2D)
    before = train.model.head.fc.weight.detach().clone()
    loss = train.step()
    assert loss.ndim == 0 and not torch.equal(before, train.model.head.fc.weight)
    assert bench.count_macs(train) > 2.5 * 2 * bench.count_macs(infer)  # forward + backward, 2 samples


def test_peak_memory_in_a_fresh_process():
    peak = bench.peak_memory("swinkit:swin_t", (1, 3, 32, 32), "infer", threads=1)
    assert 0 <= peak < 2 ** 30


def test_cli_bench_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = cli_main(["bench", "swin_t", "--img-size", "32", "--rounds", "2", "--threads", "1", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["shape"] == [1, 3, 32, 32] and result["rounds"] == 2
    assert result["median_s"] > 0 and result["gmacs_per_step"] > 0 and 0 < result["gemm_peak_fraction"]
    assert "images/s" in capsys.readouterr().out
    assert cli_main(["bench", "swin_xx"]) == 2
    assert cli_main(["bench", "swin_t", "--rounds", "0"]) == 2


@pytest.mark.parametrize("grid,kernel", [((8, 8), 4), ((9, 7), 2), ((3, 5), 4), ((6, 6), 1)])
def test_patch_linear_is_the_strided_conv(grid, kernel):
    from swinkit.models.shunted import map_to_tokens, patch_linear, tokens_to_map
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, kernel, stride=kernel).double()
    tokens = torch.randn(2, grid[0] * grid[1], 6, dtype=torch.float64, requires_grad=True)
    feature_map = tokens_to_map(tokens, grid)
    pad = (0, max(kernel - grid[1], 0), 0, max(kernel - grid[0], 0))
    expected_map = conv(F.pad(feature_map, pad))
    out, out_grid = patch_linear(tokens, grid, conv)
    assert out_grid == tuple(expected_map.shape[2:])
    torch.testing.assert_close(out, map_to_tokens(expected_map), atol=1e-12, rtol=0)
    (grad,) = torch.autograd.grad(out.sum(), tokens)
    (expected_grad,) = torch.autograd.grad(map_to_tokens(expected_map).sum(), tokens)
    torch.testing.assert_close(grad, expected_grad, atol=1e-12, rtol=0)


def test_workspace_reuses_per_thread_and_never_pickles_buffers():
    import copy
    import threading

    from swinkit.layers.workspace import linear_add_, linear_into
    workspace = Workspace()
    like = torch.zeros(1)
    a = workspace.take("slot", (4, 3), like)
    b = workspace.take("slot", (2, 5), like)  # fits in the first buffer: same memory
    assert a.data_ptr() == b.data_ptr() and b.shape == (2, 5)
    c = workspace.take("slot", (10, 10), like)  # grows
    assert c.shape == (10, 10) and workspace.take("other", (1,), like).data_ptr() != c.data_ptr()
    seen = {}
    thread = threading.Thread(target=lambda: seen.setdefault("ptr", workspace.take("slot", (10, 10), like).data_ptr()))
    thread.start()
    thread.join()
    assert seen["ptr"] != c.data_ptr()  # another thread gets its own buffers
    assert copy.deepcopy(workspace)._buffers() == {}
    with torch.inference_mode():
        buffer = workspace.take("inference", (3, 4), like)
    buffer.zero_()  # created as a normal tensor: writable outside inference mode too
    linear = torch.nn.Linear(4, 2)
    x, acc = torch.randn(3, 4), torch.randn(3, 2)
    with torch.no_grad():
        torch.testing.assert_close(linear_into(workspace.take("out", (3, 2), like), x, linear), linear(x))
        torch.testing.assert_close(linear_add_(acc.clone(), x, linear), acc + linear(x))


def test_shunted_stem_folds_eval_batchnorm_into_its_convolutions():
    from swinkit.models.shunted import ShuntedStem
    torch.manual_seed(0)
    stem = ShuntedStem(3, 8, num_conv=1).double()
    for module in stem.conv:
        if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial running statistics and affine terms
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            torch.nn.init.normal_(module.weight)
            torch.nn.init.normal_(module.bias)
    stem.eval()
    x = torch.randn(2, 3, 32, 40, dtype=torch.float64)
    expected = stem.norm(stem.conv(x).flatten(2).transpose(1, 2))
    tokens, grid = stem(x)
    assert grid == (8, 10)
    torch.testing.assert_close(tokens, expected, atol=1e-12, rtol=0)
    stem.train()  # batch statistics: the plain modules run
    torch.testing.assert_close(stem(x)[0], stem.norm(stem.conv(x).flatten(2).transpose(1, 2)), atol=1e-12, rtol=0)
