"""``swinkit convert`` / ``inflate`` / ``inspect``: checkpoint layouts, 2D -> 3D inflation, what a file holds."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from swinkit.cli import CLIError, int_list

CONVERT_FORMATS = ("swinkit", "microsoft", "timm", "torchvision", "mmaction2", "video_swin", "shunted")
VIDEO_FORMATS = ("swinkit", "torchvision", "mmaction2", "video_swin")
# Backbone settings a 2D checkpoint fixes for the video model it is inflated into.
BACKBONE_FIELDS = ("embed_dim", "depths", "num_heads", "mlp_ratio", "qkv_bias", "patch_norm", "in_chans")


def _override(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE as JSON (numbers, lists, true/false/null) or else a plain string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _window(text: str) -> tuple[int, ...]:
    return int_list(text, length=3, minimum=1)


def _add_common(parser: argparse.ArgumentParser) -> None:
    from swinkit.checkpoints.formats import ALL_FORMATS

    parser.add_argument("--set", dest="overrides", action="append", type=_override, default=[],
                        metavar="KEY=VALUE", help="architecture setting the tensors cannot tell, official "
                        "argument names, JSON values (e.g. num_heads=[2,4,8,16]); repeatable")
    parser.add_argument("--from", dest="source_format", choices=ALL_FORMATS, default=None,
                        help="layout of the input file (default: detected from its keys)")


def register(subparsers) -> None:
    convert = subparsers.add_parser(
        "convert", help="rewrite a checkpoint in another layout (swinkit safetensors or an official one)",
        description="Read a checkpoint of any supported layout, build the model it describes, and write it "
                    "as swinkit safetensors (config in the metadata) or in an official layout that timm, "
                    "torchvision, mmaction2, the Microsoft or the Shunted code loads as is. Files are read "
                    "without running code and written atomically.")
    convert.add_argument("input", metavar="IN", help="checkpoint to read (.pth/.pt/.bin or .safetensors)")
    convert.add_argument("output", metavar="OUT", help="file to write (.safetensors for --to swinkit)")
    convert.add_argument("--to", required=True, choices=CONVERT_FORMATS,
                         help="layout to write (mmaction2 = 1.x, video_swin = the original 0.x release)")
    _add_common(convert)
    convert.set_defaults(func=run_convert)

    inflate = subparsers.add_parser(
        "inflate", help="inflate a 2D Swin checkpoint into a Video Swin one",
        description="Turn a 2D Swin checkpoint (Microsoft, timm, torchvision or swinkit) into a Video Swin "
                    "backbone: the official inflate_weights rule (patch kernel repeated over time / T, bias "
                    "tables resized then tiled over temporal offsets), or 'center' (2D kernel at the central "
                    "temporal slice). The backbone comes from the 2D checkpoint; window, temporal patch and "
                    "classes from --model (default video_swin_t) and the options below.")
    inflate.add_argument("input", metavar="IN2D", help="2D Swin checkpoint")
    inflate.add_argument("output", metavar="OUT3D", help="video checkpoint to write")
    inflate.add_argument("--model", default=None,
                         help="video model to build (video_swin_t/s/b/l, ...); must match the 2D backbone")
    inflate.add_argument("--mode", choices=("inflate", "center"), default="inflate",
                         help="temporal patch-kernel rule (default: inflate, the official one)")
    inflate.add_argument("--window", type=_window, default=None, metavar="T,H,W",
                         help="window of the video model (default: the model's, 8,7,7)")
    inflate.add_argument("--num-classes", type=int, default=0,
                         help="classes of a fresh classifier to include (default: 0, backbone only)")
    inflate.add_argument("--to", choices=VIDEO_FORMATS, default=None,
                         help="layout to write (default: swinkit for .safetensors, else mmaction2)")
    inflate.set_defaults(func=run_inflate)

    inspect = subparsers.add_parser(
        "inspect", help="show a checkpoint's format, architecture, parameter count and load report",
        description="Read a checkpoint without running code, infer the model it describes, load it, and print "
                    "its layout, architecture (and the registered model it matches), parameter count and "
                    "what happened to every key.")
    inspect.add_argument("checkpoint", metavar="CKPT", help="checkpoint file")
    _add_common(inspect)
    inspect.set_defaults(func=run_inspect)


def _check_output(path: str, fmt: str) -> None:
    if fmt == "swinkit" and Path(path).suffix != ".safetensors":
        raise CLIError(f"swinkit checkpoints are safetensors files: give OUT a .safetensors name, got {path}")


def run_convert(args: argparse.Namespace) -> int:
    from swinkit.checkpoints.model import inspect_checkpoint
    from swinkit.checkpoints.save import save_checkpoint

    _check_output(args.output, args.to)
    info = inspect_checkpoint(args.input, format=args.source_format, **dict(args.overrides))
    path = save_checkpoint(info.model, args.output, format=args.to)
    print(f"{args.input} ({info.format}, {info.variant or 'custom ' + info.family}, {info.num_params:,} parameters) "
          f"-> {path} ({args.to})")
    return 0


def run_inflate(args: argparse.Namespace) -> int:
    import torch

    from swinkit.checkpoints.infer import infer_swin
    from swinkit.checkpoints.load import load_checkpoint, read_native
    from swinkit.checkpoints.save import save_checkpoint
    from swinkit.models.registry import create_model, is_model

    fmt = args.to or ("swinkit" if Path(args.output).suffix == ".safetensors" else "mmaction2")
    _check_output(args.output, fmt)
    name = args.model or "video_swin_t"
    if not is_model(name):
        raise CLIError(f"unknown model {name!r}; expected a video model such as video_swin_t")
    with torch.device("meta"):
        variant = create_model(name).config
    if variant.ndim != 3:
        raise CLIError(f"--model {name} is not a video model; expected video_swin_t/s/b/l or another video_swin_*")
    ckpt = read_native(args.input)
    if ckpt.family != "swin":
        raise CLIError(f"{args.input} holds a {ckpt.family} checkpoint; inflate reads 2D Swin checkpoints")
    backbone = {k: infer_swin(ckpt.state, ckpt.derived, ckpt.format).kwargs[k] for k in BACKBONE_FIELDS}
    differing = [k for k in BACKBONE_FIELDS if getattr(variant, k) != backbone[k]]
    if args.model and differing:
        have = ", ".join(f"{k}={backbone[k]}" for k in differing)
        raise CLIError(f"{args.input} has {have}, which {name} does not; choose the video model of the same size "
                       "or leave out --model to take the backbone from the checkpoint")
    overrides = dict(backbone, num_classes=args.num_classes,
                     patch_size=(variant.patch_size[0],) + tuple(ckpt.state["patch_embed.proj.weight"].shape[2:]))
    if args.window is not None:
        overrides["window_size"] = args.window
    model = create_model(name, **overrides)
    report = load_checkpoint(model, ckpt, inflate=args.mode)
    path = save_checkpoint(model, args.output, format=fmt)
    config = model.config
    print(f"{args.input} ({ckpt.format}) inflated ({args.mode}) into patch {config.patch_size}, window "
          f"{config.window_size}: {len(report.loaded)} tensors, {len(report.resized)} adapted -> {path} ({fmt})")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from swinkit.checkpoints.model import inspect_checkpoint

    print(inspect_checkpoint(args.checkpoint, format=args.source_format, **dict(args.overrides)))
    return 0
