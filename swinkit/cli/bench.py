"""``swinkit bench MODEL``: throughput, latency, multiply-adds and GEMM-peak fraction of one model."""
from __future__ import annotations

import argparse
import json
import statistics

from swinkit.cli import CLIError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="time a model: throughput, latency, MACs, %% of GEMM peak, peak memory",
        description="Time one swinkit model on random input (no anchors needed; benchmarks/run.py compares "
                    "with timm and torchvision). Inference runs in eval mode under inference_mode; --train "
                    "times forward, cross-entropy, backward and an AdamW step.")
    parser.add_argument("model", metavar="MODEL", help="registered name, e.g. swin_t, video_swin_t, shunted_t")
    parser.add_argument("--batch-size", type=int, default=1, help="samples per step (default: 1)")
    parser.add_argument("--img-size", type=int, default=224, help="image / frame side (default: 224)")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip for video models (default: 32)")
    parser.add_argument("--train", action="store_true", help="time training steps instead of inference")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="fp32 or bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile(model, dynamic=True) first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=10, help="timed steps after 2 warm-up steps (default: 10)")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (in a fresh process)")
    parser.add_argument("--json", metavar="PATH", help="write the figures to PATH as JSON")
    parser.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from swinkit.models import create_model, list_models
    from swinkit.tools import bench

    if args.model not in list_models():
        raise CLIError(f"unknown model {args.model!r}; expected one of {', '.join(list_models())}")
    for name in ("batch_size", "img_size", "frames", "rounds"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError("--device cuda given but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    with torch.device("meta"):
        family = create_model(args.model).family
    size = (args.img_size, args.img_size)
    shape = (args.batch_size, 3, args.frames, *size) if family == "video_swin" else (args.batch_size, 3, *size)
    task = "train" if args.train else "infer"
    runner = bench.make_runner(f"swinkit:{args.model}", shape, task, args.dtype, args.device, args.compile)
    timings = bench.time_interleaved({"model": runner.step}, args.rounds, warmup=3 if args.compile else 2,
                                     device=args.device).seconds["model"]
    median = statistics.median(timings)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    peak = bench.gemm_peak(args.device, dtype, size=512 if dtype == torch.bfloat16 and args.device == "cpu" else None)
    macs = bench.count_macs(runner)
    result = {
        "model": args.model, "shape": list(shape), "task": task, "dtype": args.dtype, "compiled": args.compile,
        "median_s": median, "min_s": min(timings), "max_s": max(timings), "rounds": len(timings),
        "items_per_s": args.batch_size / median, "gmacs_per_step": macs / 1e9, "gemm_peak_gflops": peak / 1e9,
        "gemm_peak_fraction": 2 * macs / median / peak, "environment": bench.environment(args.device),
    }
    if args.memory:
        result["peak_memory_bytes"] = bench.peak_memory(f"swinkit:{args.model}", shape, task, args.dtype,
                                                        args.device, args.threads)
    unit = "clips" if family == "video_swin" else "images"
    print(f"{args.model} {'x'.join(map(str, shape))} {task} {args.dtype}{' compiled' if args.compile else ''} "
          f"on {result['environment']['device']}, {torch.get_num_threads()} threads")
    print(f"  latency   {1e3 * median:.1f} ms/step (median of {len(timings)}; min {1e3 * min(timings):.1f}, "
          f"max {1e3 * max(timings):.1f})")
    print(f"  throughput {result['items_per_s']:.2f} {unit}/s")
    print(f"  compute   {macs / 1e9:.2f} GMACs/step, {100 * result['gemm_peak_fraction']:.0f} % of the "
          f"{peak / 1e9:.0f} GFLOP/s {args.dtype} GEMM peak")
    if args.memory:
        print(f"  peak memory {result['peak_memory_bytes'] / 2 ** 20:.0f} MiB above the idle model")
    if args.json:
        bench.write_atomic(args.json, json.dumps(result, indent=1))
    return 0
