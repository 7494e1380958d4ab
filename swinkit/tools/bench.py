"""Benchmark helpers: model specs, interleaved timing, GEMM peak, multiply-adds, peak memory.

A *model spec* names a model from any of the libraries the benchmarks compare:
``swinkit:swin_t``, ``timm:swin_tiny_patch4_window7_224``, ``torchvision:swin_t``,
``torchvision:swin3d_t``. timm and torchvision are imported only when a spec names them.

Timings of several models are taken in one process, interleaved round by round (the order
rotates every round), so that a busy neighbour slows all of them alike; compare them as ratios.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinkit.deploy.info import flop_formulas
from swinkit.engine.optim import adamw

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TASKS = ("infer", "train")

# Training options that give every model the same stochastic depth as the official recipe (and
# as torchvision's builders, which fix it: 0.2 for swin_t, 0.1 for swin3d_t); timm defaults to 0.
_TRAIN_OPTIONS = {"timm:swin_tiny_patch4_window7_224": {"drop_path_rate": 0.2}}


def build_model(spec: str, train: bool = False, overrides: dict | None = None) -> nn.Module:
    """The model a spec names, randomly initialised (no download); ``overrides`` go to its builder."""
    library, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"model spec {spec!r} must look like LIBRARY:NAME (swinkit:, timm: or torchvision:)")
    options = {**(_TRAIN_OPTIONS.get(spec, {}) if train else {}), **(overrides or {})}
    if library == "swinkit":
        from swinkit.models import create_model
        return create_model(name, **options)
    if library == "timm":
        import timm
        return timm.create_model(name, pretrained=False, **options)
    if library == "torchvision":
        import torchvision
        for namespace in (torchvision.models, torchvision.models.video):
            if hasattr(namespace, name):
                return getattr(namespace, name)(weights=None, **options)
        raise ValueError(f"torchvision has no model {name!r}")
    raise ValueError(f"unknown library {library!r} in model spec {spec!r}; expected swinkit, timm or torchvision")


def parse_shape(text: str) -> tuple[int, ...]:
    """'8x3x224x224' -> (8, 3, 224, 224)."""
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape {text!r} must be integers joined by 'x', e.g. 8x3x224x224") from None
    if len(shape) not in (4, 5) or min(shape) < 1:
        raise ValueError(f"shape {text!r} must be BxCxHxW (images) or BxCxTxHxW (videos)")
    return shape


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast context for ``dtype == 'bf16'``, else a no-op."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


@dataclass
class Runner:
    """One model prepared for one task: ``step()`` runs it once."""

    spec: str
    task: str
    model: nn.Module
    inputs: torch.Tensor
    step: Callable[[], Any]
    items: int  # samples per step (the batch size)


def make_runner(spec: str, shape: tuple[int, ...], task: str = "infer", dtype: str = "fp32",
                device: str | torch.device = "cpu", compile: bool = False, seed: int = 0,
                overrides: dict | None = None) -> Runner:
    """Build ``spec`` and a zero-argument step: eval forward under inference_mode, or one
    training step (forward, cross-entropy, backward, AdamW) in train mode."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    device = torch.device(device)
    torch.manual_seed(seed)
    model = build_model(spec, train=task == "train", overrides=overrides).to(device)
    inputs = torch.randn(shape, device=device)
    net = torch.compile(model, dynamic=True) if compile else model
    if task == "infer":
        model.eval()

        def step():
            with torch.inference_mode(), autocast(device, dtype):
                return net(inputs)
    else:
        model.train()
        num_classes = getattr(model, "num_classes", None) or 400
        target = torch.randint(0, num_classes, (shape[0],), device=device)
        # the optimizer swinkit's trainer builds (fused AdamW where PyTorch has the kernel), for every model
        optimizer = adamw(list(model.parameters()), lr=1e-4, weight_decay=0.05)

        def step():
            with autocast(device, dtype):
                loss = F.cross_entropy(net(inputs).float(), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss
    return Runner(spec, task, model, inputs, step, shape[0])


@dataclass
class Timings:
    """Seconds per step of each model, one entry per round."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def median(self, key: str) -> float:
        return statistics.median(self.seconds[key])

    def ratios(self, subject: str, anchor: str) -> dict[str, float]:
        """Speed of ``subject`` relative to ``anchor`` (>1: subject faster): median ratio of the
        medians, and the min / max over rounds of the per-round ratios."""
        per_round = [a / s for a, s in zip(self.seconds[anchor], self.seconds[subject])]
        return {"median": self.median(anchor) / self.median(subject), "min": min(per_round), "max": max(per_round)}


def time_interleaved(steps: dict[str, Callable[[], Any]], rounds: int, warmup: int = 2,
                     device: torch.device | str = "cpu", budget_s: float | None = None) -> Timings:
    """Run every step ``warmup`` times, then ``rounds`` rounds of one call each (order rotating).

    ``budget_s`` stops after the round in which the measured time passes it (at least 3 rounds).
    """
    device = torch.device(device)
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
            synchronize(device)
    timings = Timings({name: [] for name in names})
    start = time.perf_counter()
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            synchronize(device)
            t0 = time.perf_counter()
            steps[name]()
            synchronize(device)
            timings.seconds[name].append(time.perf_counter() - t0)
        if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
            break
    return timings


def gemm_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None,
              repeats: int = 5) -> float:
    """Best FLOP/s of a large square matrix product (the GEMM ceiling the models are measured against)."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = math.inf
    for i in range(repeats + 1):
        synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        if i:  # the first call warms up
            best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best


def count_macs(runner: Runner) -> float:
    """Multiply-adds of one step (forward only for inference, forward and backward for training),
    counted by ``torch.utils.flop_counter`` (it counts the backward of grouped convolutions once
    per group, an overcount for Shunted's depth-wise convolutions)."""
    from torch.utils import flop_counter
    model, x = runner.model, runner.inputs
    with flop_counter.FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter:
        if runner.task == "infer":
            with torch.inference_mode():
                model(x)
        else:
            out = model(x)
            out.float().sum().backward()
            model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def _rss_bytes(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (the peak resident set) to the current size
        return True
    except OSError:
        return False


def measure_peak_memory(spec: str, shape: tuple[int, ...], task: str, dtype: str = "fp32",
                        device: str = "cpu", steps: int = 3) -> int:
    """Bytes by which memory grows at its peak while ``steps`` steps run, in this process.

    CUDA: ``max_memory_allocated`` above what the model and inputs hold. CPU: the peak resident
    set above the resident set before the first step (Linux /proc), so it includes gradients,
    optimizer states and every temporary; run it in a fresh process (:func:`peak_memory`).
    """
    runner = make_runner(spec, shape, task, dtype, device)
    dev = torch.device(device)
    if dev.type == "cuda":
        synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        for _ in range(steps):
            runner.step()
        synchronize(dev)
        return torch.cuda.max_memory_allocated(dev) - base
    base = _rss_bytes("VmRSS")
    if base is None or not _reset_peak_rss():
        raise RuntimeError("peak memory on CPU needs Linux /proc/self/status and /proc/self/clear_refs")
    for _ in range(steps):
        runner.step()
    return _rss_bytes("VmHWM") - base


def peak_memory(spec: str, shape: tuple[int, ...], task: str, dtype: str = "fp32", device: str = "cpu",
                threads: int | None = None, timeout_s: float = 900) -> int:
    """:func:`measure_peak_memory` in a fresh Python process (same interpreter, same environment)."""
    args = [sys.executable, "-m", "swinkit.tools.bench", "memory", spec, "x".join(map(str, shape)), task,
            "--dtype", dtype, "--device", device]
    if threads:
        args += ["--threads", str(threads)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"peak memory run of {spec} failed: {done.stderr.strip()[-2000:]}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"])


def environment(device: str = "cpu") -> dict[str, Any]:
    """What a result depends on: versions, threads, CPU features, allocator settings, device."""
    info = {
        "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "platform": platform.platform(), "cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "(default allocator)"),
    }
    for module in ("timm", "torchvision"):
        with contextlib.suppress(ImportError):
            info[module] = __import__(module).__version__
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(torch.device(device))
    else:
        info["device"] = "cpu"
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _main(argv: list[str] | None = None) -> int:
    """``python -m swinkit.tools.bench memory SPEC SHAPE TASK``: one peak-memory measurement as JSON."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m swinkit.tools.bench")
    sub = parser.add_subparsers(dest="command", required=True)
    mem = sub.add_parser("memory", help="peak memory of a few steps of one model, printed as JSON")
    mem.add_argument("spec")
    mem.add_argument("shape", type=parse_shape)
    mem.add_argument("task", choices=TASKS)
    mem.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    mem.add_argument("--device", default="cpu")
    mem.add_argument("--threads", type=int)
    mem.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = measure_peak_memory(args.spec, args.shape, args.task, args.dtype, args.device, args.steps)
    print(json.dumps({"spec": args.spec, "peak_bytes": peak}))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
