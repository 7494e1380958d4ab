"""Export: tiny models of each family through torch.export, ONNX (onnxruntime) and .pt2, against PyTorch."""
from __future__ import annotations

import argparse
import math
import warnings

import onnx
import onnxruntime
import pytest
import torch

import swinkit
import swinkit.models.shunted  # noqa: F401  (registers shunted_*)
from swinkit.cli import CLIError
from swinkit.cli import deploy as deploy_cli
from swinkit.deploy.export import (TOLERANCE, AxisRange, axis_ranges, check_shapes, export_model, export_program,
                                   save_program)

# name, builder overrides, traced input (batch 2: torch.export specialises size-1 axes). Every model has a
# shifted block whose grid is larger than its window, so the shifted-window mask is part of the graph.
TINY = {
    "swin": ("swin_t", dict(embed_dim=8, depths=(2,), num_heads=(1,), window_size=4, num_classes=5,
                            img_size=None), (2, 3, 32, 32)),
    "video_swin": ("video_swin_t", dict(embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=(2, 2, 2),
                                        num_classes=5), (2, 3, 8, 16, 16)),  # with patch merging
    "shunted": ("shunted_t", dict(embed_dims=(8, 16), depths=(1, 1), num_heads=(2, 2), mlp_ratios=(2, 2),
                                  sr_ratios=(4, 1), num_classes=5), (2, 3, 32, 32)),
}


def tiny_model(family: str) -> torch.nn.Module:
    """A tiny model whose every parameter matters (the default init gives near-zero logits)."""
    name, overrides, _ = TINY[family]
    model = swinkit.create_model(name, **overrides).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                fan_in = math.prod(param.shape[1:])
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(fan_in))
            else:
                param.copy_(0.2 * torch.randn(param.shape, generator=generator) + (param == 1).float())
    return model


@pytest.fixture(scope="module")
def traced():
    """family -> (model, program, why spatial axes stayed static, traced shape); one trace per family."""
    result = {}
    for family, (_, _, shape) in TINY.items():
        model = tiny_model(family)
        example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        # Swin and Video Swin fall back to static sizes (see test_sizes_decided_in_python_stay_static) after
        # a slow symbolic trace; not asking for dynamic sizes saves that trace
        program, static_reason = export_program(model, example, dynamic_spatial=family == "shunted")
        result[family] = (model, program, static_reason, shape)
    return result


def _inputs(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow  # traces and converts real graphs: ~5-20 s each
@pytest.mark.parametrize("family", list(TINY))
def test_onnx_runs_in_onnxruntime_like_pytorch(traced, family, tmp_path):
    model, program, _, shape = traced[family]
    path = tmp_path / "model.onnx"
    report = save_program(program, model, path, shape)
    assert report.format == "onnx" and path.stat().st_size > 0
    assert len(report.checks) >= 3 and report.max_abs_diff <= TOLERANCE
    opsets = {entry.domain: entry.version for entry in onnx.load(str(path)).opset_import}
    assert opsets[""] >= 17

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    new_shapes = [(4, *shape[1:])]
    if family == "shunted":  # the only family whose graph keeps symbolic spatial sizes
        new_shapes.append((1, 3, 48, 40))
    for seed, new_shape in enumerate(new_shapes):
        x = _inputs(new_shape, seed + 10)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        with torch.no_grad():
            expected = model(x)
        assert type(expected) is torch.Tensor  # tracing left no fake tensors in the window caches
        assert expected.std() > 0.1  # differences below are measured on non-trivial logits
        assert (got - expected).abs().max() <= TOLERANCE


@pytest.mark.slow  # traces and converts real graphs: ~5-20 s each
@pytest.mark.parametrize("family", list(TINY))
def test_torch_export_round_trip(traced, family, tmp_path):
    model, program, _, shape = traced[family]
    path = tmp_path / "model.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. the .pt2 writer's complaint about channels-last weights
        report = save_program(program, model, path, shape, check=False)  # compared below, after a fresh load
        assert report.format == "pt2" and report.checks == []
        loaded = torch.export.load(str(path)).module()
    x = _inputs((3, *shape[1:]), 7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)


@pytest.mark.slow  # traces and converts real graphs: ~5-20 s each
def test_dynamic_axes_where_the_graph_allows(traced):
    for family, (_, program, static_reason, shape) in traced.items():
        ranges = axis_ranges(program)
        assert ranges[0].low == 1 and ranges[0].high >= 1024  # batch always dynamic
        if family == "shunted":
            assert static_reason is None and {2, 3} <= set(ranges)
            assert ranges[2].low <= shape[2] and ranges[2].high is None
        else:
            assert static_reason == "not requested" and set(ranges) == {0}


class PadsToWindows(torch.nn.Module):
    """Pads the last axis to a multiple of 4 when it needs it, deciding in Python like Swin's windows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        padded = -(-width // 4) * 4
        if padded != width:
            x = torch.nn.functional.pad(x, (0, padded - width))
        return x.reshape(x.shape[0], x.shape[1], -1, 4).sum(-1)


def test_sizes_decided_in_python_stay_static():
    # traced with a symbolic width, the graph assumes the traced branch (no padding) and is wrong at other
    # widths; the program is checked at other sizes and the width falls back to static
    program, static_reason = export_program(PadsToWindows(), torch.randn(2, 3, 16), dynamic_spatial=True)
    assert "symbolic sizes is wrong at input 1x3x" in static_reason and set(axis_ranges(program)) == {0}
    assert program.module()(torch.ones(5, 3, 16)).tolist() == torch.full((5, 3, 4), 4.0).tolist()


def test_check_shapes_cover_batches_and_dynamic_sizes():
    shapes = check_shapes((2, 3, 32, 32), {0: AxisRange(1, None), 2: AxisRange(32, None), 3: AxisRange(32, 40)})
    assert shapes == [(2, 3, 32, 32), (1, 3, 32, 32), (3, 3, 32, 32), (1, 3, 48, 32)]
    assert check_shapes((1, 3, 8, 32, 32), {0: AxisRange(1, None)}) == [(1, 3, 8, 32, 32), (3, 3, 8, 32, 32)]


@pytest.mark.slow  # traces and converts real graphs: ~5-20 s each
def test_failed_check_writes_nothing(traced, tmp_path):
    model, program, _, shape = traced["swin"]
    path = tmp_path / "model.pt2"
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        save_program(program, model, path, shape, tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_clear_errors(tmp_path):
    model = tiny_model("swin")
    with pytest.raises(ValueError, match=r"\.onnx or \.pt2"):
        export_model(model, tmp_path / "model.tflite", (1, 3, 32, 32))
    with pytest.raises(ValueError, match="expected 4 axes"):
        export_model(model, tmp_path / "model.onnx", (1, 3, 4, 32, 32))
    with pytest.raises(ValueError, match="batch of at least 2"):
        export_program(model, torch.zeros(1, 3, 32, 32))


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    deploy_cli.register(parser.add_subparsers())
    return parser.parse_args(argv)


@pytest.mark.slow  # traces and converts real graphs: ~5-20 s each
def test_cli_export_writes_a_checked_file(tmp_path, capsys):
    out = tmp_path / "tiny.pt2"
    args = _cli(["export", "swin_t", str(out), "--input", "1x3x16x16", "--static", "--model-kwargs",
                 "{embed_dim: 8, depths: [2], num_heads: [1], window_size: 2, num_classes: 3, img_size: null}"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_size > 0 and "max |exported - PyTorch|" in printed and "axis 0 [1," in printed
    assert "spatial/temporal axes are static: not requested" in printed


def test_cli_export_errors(tmp_path):
    with pytest.raises(CLIError, match="neither a checkpoint file nor a registered model"):
        deploy_cli.run_export(_cli(["export", "no_such_model", str(tmp_path / "m.onnx")]))
    with pytest.raises(CLIError, match="--opset must be >= 17"):
        deploy_cli.run_export(_cli(["export", "swin_t", str(tmp_path / "m.onnx"), "--opset", "13"]))
    with pytest.raises(CLIError, match="YAML mapping"):
        deploy_cli.run_export(_cli(["export", "swin_t", str(tmp_path / "m.onnx"), "--model-kwargs", "[1, 2]"]))
    with pytest.raises(SystemExit):
        _cli(["export", "swin_t", "m.onnx", "--input", "1x3xfoo"])
    assert not any(tmp_path.iterdir())
