"""swinkit's compiled CPU kernels, AVX2 + FMA, fp32: window attention (``swinkit/csrc/window_attention.cpp``),
linear layers (``swinkit/csrc/linear.cpp``), the MLP's GELU (``swinkit/csrc/gelu.cpp``) and Shunted's depthwise
3x3 convolutions (``swinkit/csrc/depthwise.cpp``), for inference and the autograd-free parts of training.

Built into one library with ``torch.utils.cpp_extension`` the first time they are needed (about 30 seconds,
once per torch version; a C++ compiler is needed) into ``$SWINKIT_CACHE`` (default ``~/.cache/swinkit``), then
loaded from there. ``python -m swinkit.tools.build_kernels`` builds them ahead of time. ``SWINKIT_NATIVE=0`` turns
them off. Where they cannot be built or the CPU lacks AVX2, swinkit warns once and uses its PyTorch paths, which
compute the same thing.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path

import torch
import torch.nn as nn

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = (CSRC / "window_attention.cpp", CSRC / "linear.cpp", CSRC / "gelu.cpp", CSRC / "depthwise.cpp")
HEADERS = (CSRC / "avx2.h",)

_lock = threading.Lock()
_state: dict[str, bool] = {}

# the op: its schema and shape function here, its CPU implementation in the compiled library (registered
# when the library loads), so that the call goes through the dispatcher with no Python wrapper around it
torch.library.define("swinkit::window_attention",
                     "(Tensor q, Tensor k, Tensor v, Tensor? bias, float scale) -> Tensor")


@torch.library.register_fake("swinkit::window_attention")
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    windows, heads, tokens, head_dim = q.shape
    return q.new_empty(windows, tokens, heads, head_dim)


OP = torch.ops.swinkit.window_attention  # the op packets (FLOP counters key their formulas on them)

torch.library.define("swinkit::window_attention_backward_",
                     "(Tensor(a!) grad_q, Tensor(b!) grad_k, Tensor(c!) grad_v, Tensor grad_out, Tensor q, Tensor k, "
                     "Tensor v, Tensor? bias, float scale, int grad_bias_windows) -> Tensor")


@torch.library.register_fake("swinkit::window_attention_backward_")
def _(grad_q: torch.Tensor, grad_k: torch.Tensor, grad_v: torch.Tensor, grad_out: torch.Tensor, q: torch.Tensor,
      k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float,
      grad_bias_windows: int) -> torch.Tensor:
    _, heads, tokens, _ = q.shape
    return q.new_empty(grad_bias_windows, heads, tokens, tokens)


BACKWARD_OP = torch.ops.swinkit.window_attention_backward_

torch.library.define("swinkit::linear_",
                     "(Tensor(a!) out, Tensor x, Tensor weight, Tensor? bias, bool accumulate, bool gelu=False, "
                     "bool norm=False, Tensor? norm_weight=None, Tensor? norm_bias=None, float norm_eps=1e-5) -> ()")


@torch.library.register_fake("swinkit::linear_")
def _(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, accumulate: bool,
      gelu: bool = False, norm: bool = False, norm_weight: torch.Tensor | None = None,
      norm_bias: torch.Tensor | None = None, norm_eps: float = 1e-5) -> None:
    return None


LINEAR_OP = torch.ops.swinkit.linear_

torch.library.define("swinkit::gelu_", "(Tensor(a!) out, Tensor x) -> ()")


@torch.library.register_fake("swinkit::gelu_")
def _(out: torch.Tensor, x: torch.Tensor) -> None:
    return None


GELU_OP = torch.ops.swinkit.gelu_

torch.library.define("swinkit::gelu_backward_",
                     "(Tensor(a!) grad, Tensor(b!) hidden, Tensor pre, bool sum_rows) -> Tensor")


@torch.library.register_fake("swinkit::gelu_backward_")
def _(grad: torch.Tensor, hidden: torch.Tensor, pre: torch.Tensor, sum_rows: bool) -> torch.Tensor:
    return pre.new_empty(pre.shape[1] if sum_rows else 0)


GELU_BACKWARD_OP = torch.ops.swinkit.gelu_backward_

torch.library.define("swinkit::depthwise_conv3x3_",
                     "(Tensor(a!) out, Tensor x, Tensor weight, Tensor? bias, bool residual, bool gelu) -> ()")


@torch.library.register_fake("swinkit::depthwise_conv3x3_")
def _(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: bool,
      gelu: bool) -> None:
    return None


DEPTHWISE_OP = torch.ops.swinkit.depthwise_conv3x3_


def cache_dir() -> Path:
    """One build per torch version and kernel source."""
    root = os.environ.get("SWINKIT_CACHE") or Path.home() / ".cache" / "swinkit"
    torch_tag = torch.__version__.replace("+", "_").replace(".", "_")
    digest = hashlib.sha256()
    for path in SOURCES + HEADERS:
        digest.update(path.read_bytes() if path.exists() else b"missing")
    source_tag = digest.hexdigest()[:12]
    return Path(root) / f"native_torch_{torch_tag}_{source_tag}"


def enabled() -> bool:
    """Not turned off by ``SWINKIT_NATIVE=0`` and the CPU runs AVX2 (PyTorch's own dispatch level)."""
    if os.environ.get("SWINKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def available() -> bool:
    """Whether the op has its CPU implementation: the compiled library is loaded (built on the first call);
    False where the kernel is off or cannot be built."""
    if "built" in _state:
        return _state["built"]
    with _lock:
        if "built" not in _state:
            _state["built"] = enabled() and _build()
    return _state["built"]


def _build() -> bool:
    from torch.utils.cpp_extension import load

    if shutil.which("ninja") is None:  # the ninja wheel (a dependency) puts it beside this Python, maybe off PATH
        try:
            import ninja
            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("*.so")):
        print(f"swinkit: building the CPU kernels in {directory} (once per torch version, about 30 seconds)",
              file=sys.stderr, flush=True)
    try:
        load(name="swinkit_native", sources=[str(path) for path in SOURCES], build_directory=str(directory),
             is_python_module=False,
             extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
        return True
    except Exception as error:  # no compiler, no ninja, a failed build: the PyTorch paths do the same work
        warnings.warn(f"swinkit: the CPU kernels could not be built in {directory} ({error}); "
                      "using the PyTorch paths instead (set SWINKIT_NATIVE=0 to silence this)",
                      RuntimeWarning, stacklevel=3)
        return False


def autograd_free(tensors: tuple[torch.Tensor, ...]) -> bool:
    """No autograd through these: grad mode is off or none of them requires grad."""
    if not torch.is_grad_enabled():
        return True
    for t in tensors:
        if t.requires_grad:
            return False
    return True


def _takes(tensors: tuple[torch.Tensor, ...]) -> bool:
    """What the kernels need: fp32 CPU tensors, no autograd through them (the ops have no autograd formulas: the
    autograd functions that use them call them from their forward and backward), eager mode, and the library
    built (building it on the first call, so this is checked last). Called before every kernel call, so it uses
    plain loops and tensor flags (``t.is_cpu``), no generators or ``torch.device`` objects."""
    for t in tensors:
        if not t.is_cpu or t.dtype != torch.float32:
            return False
    return autograd_free(tensors) and not torch.compiler.is_compiling() and available()


def _require(kernel: str) -> None:
    """Raise where the compiled kernels are off or could not be built (callers check ``*_applies`` first)."""
    if not available():
        raise RuntimeError(f"swinkit's CPU {kernel} kernel is not available (see swinkit.layers.native)")


def applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """Whether :func:`window_attention` takes these: head dim a multiple of 8 with unit stride, k and v laid out
    alike, and what the kernels need (:func:`_takes`)."""
    return (q.shape[-1] % 8 == 0 and q.stride(-1) == 1 and k.stride(-1) == 1 and k.stride() == v.stride()
            and _takes((q, k, v) if bias is None else (q, k, v, bias)))


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                     scale: float) -> torch.Tensor:
    """softmax(scale q k^T + bias) v per (window, head): q (W, nH, N, hd), k and v (W, nH, M, hd), fp32 views
    (hd a multiple of 8, unit stride), bias None, (nH, N, M) or (nW, nH, N, M) for the windows of each
    sample -> (W, N, nH, hd). A dispatcher op (``torch.ops.swinkit.window_attention``), so FLOP counters
    and profilers see it."""
    _require("window-attention")
    return OP(q, k, v, _per_window(bias), scale)


def backward_applies(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     bias: torch.Tensor | None = None) -> bool:
    """Whether :func:`window_attention_backward_` takes these: windows whose keys are their queries (N = M),
    and what :func:`applies` asks of the forward pass, for grad_out (laid out like q) too."""
    return (q.shape == k.shape and grad_out.shape == q.shape and grad_out.stride(-1) == 1
            and applies(q, k, v, bias) and _takes((grad_out,)))


def window_attention_backward_(grad_q: torch.Tensor, grad_k: torch.Tensor, grad_v: torch.Tensor,
                               grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               bias: torch.Tensor | None, scale: float, grad_bias_windows: int) -> torch.Tensor:
    """The gradients of :func:`window_attention` (windows of N tokens, the weights recomputed): grad_out, q, k, v
    (W, nH, N, hd) views; writes dq, dk, dv into grad_q, grad_k, grad_v (views alike) and returns the bias
    gradient summed over the windows w with the same ``w % grad_bias_windows``: (grad_bias_windows, nH, N, N)
    (empty for 0); bias as for :func:`window_attention`. See :func:`backward_applies`. A dispatcher op
    (``torch.ops.swinkit.window_attention_backward_``)."""
    _require("window-attention")
    return BACKWARD_OP(grad_q, grad_k, grad_v, grad_out, q, k, v, _per_window(bias), scale, grad_bias_windows)


def _per_window(bias: torch.Tensor | None) -> torch.Tensor | None:
    """A bias as the ops take it: (nH, N, M) or (nW, nH, N, M) -> contiguous (1 or nW, nH, N, M)."""
    if bias is None:
        return None
    return (bias if bias.dim() == 4 else bias.unsqueeze(0)).contiguous()


def linear_applies(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether :func:`linear_` takes these: matrices with unit stride along features, a contiguous weight (and
    bias), no empty axis, and what the kernels need (:func:`_takes`)."""
    return (x.dim() == 2 and out.dim() == 2 and x.stride(1) == 1 and out.stride(1) == 1 and weight.is_contiguous()
            and (bias is None or bias.is_contiguous()) and x.shape[0] > 0 and x.shape[1] > 0 and weight.shape[0] > 0
            and _takes((out, x, weight) if bias is None else (out, x, weight, bias)))


def linear_(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            accumulate: bool = False, gelu: bool = False, norm: nn.LayerNorm | None = None) -> torch.Tensor:
    """``out[:] = x weight^T + bias`` (``out +=`` with ``accumulate``; ``out[:] = gelu(x weight^T + bias)``, the
    exact GELU, with ``gelu``; x replaced by ``norm(x)`` for a LayerNorm over x's features, see
    :func:`norm_applies`):
    x (n, C_in), weight (C_out, C_in), out (n, C_out), fp32 CPU (see :func:`linear_applies`). Returns ``out``.
    A dispatcher op (``torch.ops.swinkit.linear_``)."""
    _require("linear")
    if norm is None:
        LINEAR_OP(out, x, weight, bias, accumulate, gelu)
    else:
        LINEAR_OP(out, x, weight, bias, accumulate, gelu, True, norm.weight, norm.bias, norm.eps)
    return out


def norm_applies(norm: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`linear_` can normalise x (n, C) with ``norm`` on the way in: an ``nn.LayerNorm`` over C whose
    affine parameters (if any) are contiguous fp32 and need no gradient."""
    if not isinstance(norm, nn.LayerNorm) or norm.normalized_shape != (x.shape[-1],):
        return False
    parameters = tuple(p for p in (norm.weight, norm.bias) if p is not None)
    for p in parameters:
        if not p.is_cpu or p.dtype != torch.float32 or not p.is_contiguous():
            return False
    return autograd_free(parameters)


def gelu_applies(*tensors: torch.Tensor) -> bool:
    """Whether :func:`gelu_` and :func:`gelu_backward_` take these: contiguous, and what the kernels need
    (:func:`_takes`)."""
    return all(t.is_contiguous() for t in tensors) and _takes(tensors)


def gelu_(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out[:] = gelu(x)``, the exact (erf) GELU, elementwise (``out`` may be ``x``); fp32 CPU, contiguous
    (see :func:`gelu_applies`). Returns ``out``. A dispatcher op (``torch.ops.swinkit.gelu_``)."""
    _require("GELU")
    GELU_OP(out, x)
    return out


def gelu_backward_(grad: torch.Tensor, hidden: torch.Tensor, pre: torch.Tensor,
                   sum_rows: bool = False) -> torch.Tensor | None:
    """The GELU's backward pass in one sweep over pre (n, C): ``hidden[:] = gelu(pre)`` (the bits :func:`gelu_`
    gives; hidden may be pre) and ``grad *= gelu'(pre)`` in place, grad and hidden (n, C); returns the new grad's
    column sums (C,) with ``sum_rows``, else None. A dispatcher op (``torch.ops.swinkit.gelu_backward_``)."""
    _require("GELU")
    sums = GELU_BACKWARD_OP(grad, hidden, pre, sum_rows)
    return sums if sum_rows else None


def depthwise_applies(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether :func:`depthwise_conv3x3_` takes these: x and out contiguous (B, H, W, C) with C a multiple of 8, a
    contiguous (C, 1, 3, 3) weight (and (C,) bias), and what the kernels need (:func:`_takes`)."""
    return (x.dim() == 4 and x.shape[3] % 8 == 0 and x.is_contiguous() and out.is_contiguous()
            and out.shape == x.shape and weight.shape == (x.shape[3], 1, 3, 3) and weight.is_contiguous()
            and (bias is None or bias.is_contiguous())
            and _takes((out, x, weight) if bias is None else (out, x, weight, bias)))


def depthwise_conv3x3_(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       residual: bool = False, gelu: bool = False) -> torch.Tensor:
    """``out[:] = act(x + conv(x))`` for a depthwise 3x3 convolution (stride 1, zero padding 1) on channels-last
    x (B, H, W, C): ``x +`` with ``residual``, act the exact GELU with ``gelu`` (else none); weight (C, 1, 3, 3),
    bias (C,) or None; out (B, H, W, C), not x (see :func:`depthwise_applies`). Returns ``out``. A dispatcher op
    (``torch.ops.swinkit.depthwise_conv3x3_``)."""
    _require("depthwise-convolution")
    DEPTHWISE_OP(out, x, weight, bias, residual, gelu)
    return out
