"""Export to ONNX and to torch.export (``ExportedProgram`` ``.pt2``), checked against PyTorch.

Every export goes through ``torch.export``: the batch axis is always dynamic; the spatial / temporal axes
are made dynamic when the traced graph allows it and still reproduces the model at other sizes (Shunted),
otherwise they keep the example's size (Swin and Video Swin: their window plan and shifted-window masks
are decided in Python from the grid size). ONNX is produced from the ``ExportedProgram`` by the dynamo
exporter after attention is written out as matmuls (see :func:`program_to_onnx`). The written file is
run again (onnxruntime for ``.onnx``, ``torch.export.load`` for ``.pt2``) on several inputs and compared
with the PyTorch model before it is moved into place.
"""
from __future__ import annotations

import io
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch.export import Dim, ExportedProgram

from swinkit.checkpoints.io import atomic_write
from swinkit.deploy.inputs import default_input_shape, num_input_axes
from swinkit.layers import windows

DEFAULT_OPSET = 18
MIN_OPSET = 17
TOLERANCE = 1e-4  # max abs difference allowed between the exported graph and PyTorch
FORMATS = {".onnx": "onnx", ".pt2": "pt2"}
TRACE_BATCH = 2  # torch.export specialises axes of size 1, so the traced example has batch 2


@dataclass(frozen=True)
class AxisRange:
    """Sizes a dynamic input axis accepts; ``high`` None means unbounded."""

    low: int
    high: int | None

    def __str__(self) -> str:
        return f"[{self.low}, {'inf' if self.high is None else self.high}]"


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and how the written graph compared with PyTorch."""

    path: Path
    format: str  # "onnx" | "pt2"
    example_shape: tuple[int, ...]
    dynamic_axes: dict[int, AxisRange]  # input axis -> accepted sizes (axis 0 is the batch)
    static_reason: str | None = None  # why the spatial/temporal axes stayed static, when they did
    checks: list[tuple[tuple[int, ...], float]] = field(default_factory=list)  # (input shape, max abs diff)
    seconds: float = 0.0

    @property
    def max_abs_diff(self) -> float:
        return max((diff for _, diff in self.checks), default=float("nan"))

    def summary(self) -> str:
        axes = ", ".join(f"axis {a} {r}" for a, r in sorted(self.dynamic_axes.items()))
        lines = [f"wrote {self.path} ({self.format}) in {self.seconds:.1f} s",
                 f"  traced with input {'x'.join(map(str, self.example_shape))}; dynamic: {axes}"]
        if self.static_reason:
            lines.append(f"  spatial/temporal axes are static: {self.static_reason}")
        for shape, diff in self.checks:
            lines.append(f"  checked input {'x'.join(map(str, shape))}: max |exported - PyTorch| = {diff:.2e}")
        return "\n".join(lines)


def forget_traced_constants() -> None:
    """Empty the window caches: an entry first made while tracing would hold a fake tensor."""
    for value in vars(windows).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()
    getattr(windows, "_MASK_CACHE", {}).clear()


def axis_ranges(program: ExportedProgram) -> dict[int, AxisRange]:
    """Input axis -> accepted sizes, for the axes the program keeps symbolic."""
    user_input = program.graph_signature.user_inputs[0]
    placeholder = next(node for node in program.graph.nodes if node.name == user_input)
    ranges = {}
    for axis, size in enumerate(placeholder.meta["val"].shape):
        if isinstance(size, torch.SymInt):
            bounds = program.range_constraints[size.node.expr]
            high = None if not math.isfinite(float(bounds.upper)) else int(bounds.upper)
            ranges[axis] = AxisRange(int(bounds.lower), high)
    return ranges


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return " ".join(lines[:2])[:300] if lines else type(err).__name__


def _trace(model: nn.Module, example: torch.Tensor, spatial: bool) -> ExportedProgram:
    axes = {0: Dim("batch", min=1, max=65536)}
    if spatial:
        axes.update({axis: Dim.AUTO for axis in range(2, example.ndim)})
    with torch.no_grad():
        model(example)  # fills the window caches with real tensors, so tracing only reads constants
    with torch.enable_grad():  # the autograd-free inference paths loop over windows in Python
        return torch.export.export(model, (example,), dynamic_shapes={"x": axes})


def export_program(model: nn.Module, example: torch.Tensor,
                   dynamic_spatial: bool = True) -> tuple[ExportedProgram, str | None]:
    """``torch.export`` of ``model`` (eval mode) on ``example`` (B >= 2) with a dynamic batch axis.

    With ``dynamic_spatial`` the spatial/temporal axes are first traced as dynamic (``Dim.AUTO``); the
    program is kept only if it reproduces the model at other sizes of its accepted range (tracing can
    miss a decision the model takes in Python from the sizes). Otherwise the axes stay static. Returns
    the program and, when they stayed static, why.
    """
    if example.shape[0] < 2:
        raise ValueError(f"the traced example needs a batch of at least 2 (size-1 axes are specialised), "
                         f"got shape {tuple(example.shape)}")
    model.eval()
    reason = "not requested"
    try:
        if dynamic_spatial:
            try:
                program = _trace(model, example, spatial=True)
            except Exception as err:  # noqa: BLE001 - any tracing failure means "keep the sizes static"
                reason = f"the graph cannot be traced with symbolic sizes ({type(err).__name__}: {_first_line(err)})"
            else:
                ranges = axis_ranges(program)
                if not any(axis >= 2 for axis in ranges):
                    return program, "tracing specialised every spatial/temporal size"
                problem = _first_mismatch(program, model, _other_sizes(tuple(example.shape), ranges))
                if problem is None:
                    return program, None
                reason = f"the graph traced with symbolic sizes is wrong {problem}"
        try:
            return _trace(model, example, spatial=False), reason
        except Exception as err:
            raise RuntimeError(f"torch.export cannot trace {type(model).__name__} with a dynamic batch axis: "
                               f"{_first_line(err)}") from err
    finally:
        forget_traced_constants()


def _other_sizes(example_shape: tuple[int, ...], ranges: dict[int, AxisRange]) -> list[tuple[int, ...]]:
    """Batch-1 inputs at the smallest accepted spatial/temporal sizes and at the one :func:`check_shapes` uses."""
    smallest = [1, *example_shape[1:]]
    for axis, bounds in ranges.items():
        if axis >= 2:
            smallest[axis] = bounds.low
    shapes = [shape for shape in check_shapes(example_shape, ranges) if shape[2:] != example_shape[2:]]
    return list(dict.fromkeys([tuple(smallest), *shapes]))


def _first_mismatch(program: ExportedProgram, model: nn.Module, shapes: list[tuple[int, ...]]) -> str | None:
    """None if ``program`` reproduces ``model`` on inputs of ``shapes``, else where and how it does not."""
    module = program.module()
    for shape in shapes:
        try:
            (_, diff), = compare(model, module, [shape])
        except Exception as err:  # noqa: BLE001 - a graph that fails on a size it accepts is wrong there
            return f"at input {'x'.join(map(str, shape))} ({type(err).__name__}: {_first_line(err)})"
        if not diff <= TOLERANCE:
            return f"at input {'x'.join(map(str, shape))} (max abs difference {diff:.2e})"
    return None


def _attention_as_matmuls(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                          scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    """``scaled_dot_product_attention`` (inference, any rank) as matmul / softmax / matmul.

    The result has the memory layout of the fused CPU kernel, (..., N, heads, hd) seen as (..., heads, N, hd):
    a reshape traced after the fused kernel may have been recorded as a view that needs that layout.
    """
    if is_causal or enable_gqa or dropout_p:
        raise ValueError("exported attention supports neither is_causal, enable_gqa nor dropout")
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = (query * scale) @ key.transpose(-2, -1)
    if attn_mask is not None:
        scores = scores + attn_mask
    out = scores.softmax(dim=-1) @ value
    return out.transpose(-3, -2).contiguous().transpose(-3, -2)


def _needs_matmul_attention(program: ExportedProgram) -> bool:
    """True if some attention call is not 4-D or has a mask (what the stock ONNX translation handles as is)."""
    for node in program.graph.nodes:
        if node.target is torch.ops.aten.scaled_dot_product_attention.default:
            mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
            if node.args[0].meta["val"].ndim != 4 or mask is not None:
                return True
    return False


def program_to_onnx(program: ExportedProgram, path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> None:
    """Write ``program`` as an ONNX model (one file, weights inside; input ``x``, output ``logits``).

    Window attention is first written out as matmuls: the stock ONNX translation takes 4-D inputs only,
    and with a mask, replaying the fused kernel while converting can give another memory layout than the
    one traced. Plain 4-D attention (Shunted) keeps the stock translation.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    if _needs_matmul_attention(program):
        program = program.run_decompositions(
            {torch.ops.aten.scaled_dot_product_attention.default: _attention_as_matmuls})
    onnx_program = torch.onnx.export(program, (), dynamo=True, opset_version=opset, output_names=["logits"],
                                     verbose=False)
    onnx_program.save(str(path), external_data=False)


def check_shapes(example_shape: tuple[int, ...], ranges: dict[int, AxisRange]) -> list[tuple[int, ...]]:
    """Input shapes to compare on: the example, batch 1 and 3, and a new size on every dynamic axis >= 2."""
    shapes = [tuple(example_shape), (1, *example_shape[1:]), (3, *example_shape[1:])]
    changed = list(example_shape)
    for axis, bounds in ranges.items():
        if axis < 2:
            continue
        size = example_shape[axis]
        larger = size + 16
        changed[axis] = larger if bounds.high is None or larger <= bounds.high else max(bounds.low, size - 16)
    if tuple(changed) != tuple(example_shape):
        shapes.append((1, *changed[1:]))
    return list(dict.fromkeys(shapes))


def _onnx_runner(path: str):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {input_name: x.numpy()})[0])


def _program_runner(data: bytes):
    return torch.export.load(io.BytesIO(data)).module()


def compare(model: nn.Module, run, shapes: list[tuple[int, ...]], seed: int = 0) -> list[tuple[tuple[int, ...], float]]:
    """Max abs difference between ``run(x)`` and ``model(x)`` for a standard-normal ``x`` of each shape."""
    generator = torch.Generator().manual_seed(seed)
    results = []
    model.eval()
    for shape in shapes:
        x = torch.randn(shape, generator=generator)
        with torch.no_grad():
            expected = model(x)
            got = run(x)
        if tuple(got.shape) != tuple(expected.shape):
            raise RuntimeError(f"exported graph gave output {tuple(got.shape)} for input {shape}, "
                               f"PyTorch {tuple(expected.shape)}")
        results.append((tuple(shape), float((got.float() - expected.float()).abs().max())))
    return results


def save_program(program: ExportedProgram, model: nn.Module, path: str | os.PathLike,
                 example_shape: tuple[int, ...], *, opset: int = DEFAULT_OPSET, check: bool = True,
                 tolerance: float = TOLERANCE) -> ExportReport:
    """Write ``program`` (traced from ``model`` on ``example_shape``) to ``path``: ``.onnx`` or ``.pt2``.

    The written file is run on :func:`check_shapes` inputs and compared with ``model``; it is moved into
    place only when every max abs difference is within ``tolerance`` (else ``RuntimeError``).
    """
    start = time.perf_counter()
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"output file must end in {' or '.join(FORMATS)}, got {path.name!r}")
    ranges = axis_ranges(program)
    report = ExportReport(path, fmt, tuple(example_shape), ranges)

    def write(tmp: str) -> None:
        if fmt == "onnx":
            program_to_onnx(program, tmp, opset)
        else:  # through memory: torch.export.load wants a name ending in .pt2, the temporary file has none
            _contiguous_weights(program)
            buffer = io.BytesIO()
            torch.export.save(program, buffer)
            Path(tmp).write_bytes(buffer.getvalue())
        if check:
            runner = _onnx_runner(tmp) if fmt == "onnx" else _program_runner(Path(tmp).read_bytes())
            report.checks = compare(model, runner, check_shapes(tuple(example_shape), ranges))
            if report.max_abs_diff > tolerance:
                raise RuntimeError(f"the exported {fmt} graph differs from PyTorch by {report.max_abs_diff:.2e} "
                                   f"(> {tolerance:g}); nothing was written")

    atomic_write(path, write)
    report.seconds = time.perf_counter() - start
    return report


def _contiguous_weights(program: ExportedProgram) -> None:
    """Give ``program`` contiguous copies of its channels-last weights (same values): the ``.pt2`` writer
    expects every weight to cover its storage in row-major order."""
    for name, value in program.state_dict.items():
        if not value.is_contiguous():
            copy = value.detach().contiguous()
            if isinstance(value, nn.Parameter):
                copy = nn.Parameter(copy, value.requires_grad)
            program.state_dict[name] = copy


def export_model(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...] | None = None, *,
                 opset: int = DEFAULT_OPSET, dynamic_spatial: bool = True, check: bool = True,
                 tolerance: float = TOLERANCE) -> ExportReport:
    """Export ``model`` to ``path`` (``.onnx`` or ``.pt2``) and check the written file against PyTorch.

    ``input_shape`` (B, C, H, W) or (B, C, T, H, W) sets the traced sizes (default: the model's paper input);
    the batch axis is dynamic whatever B is. See :func:`export_program` and :func:`save_program`.
    """
    start = time.perf_counter()
    if Path(path).suffix.lower() not in FORMATS:
        raise ValueError(f"output file must end in {' or '.join(FORMATS)}, got {Path(path).name!r}")
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    if len(shape) != 2 + num_input_axes(model):
        raise ValueError(f"input shape {shape} does not fit a {getattr(model, 'family', 'model')} model: "
                         f"expected {2 + num_input_axes(model)} axes")
    example = torch.randn((TRACE_BATCH, *shape[1:]), generator=torch.Generator().manual_seed(0))
    program, static_reason = export_program(model, example, dynamic_spatial)
    report = save_program(program, model, path, tuple(example.shape), opset=opset, check=check,
                          tolerance=tolerance)
    report.static_reason = static_reason
    report.seconds = time.perf_counter() - start
    return report
