"""``swinkit export``, ``swinkit info`` and ``swinkit visualize``: deploy a model and look inside it."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from swinkit.cli import CLIError, int_list, yaml_option


def _shape(text: str) -> tuple[int, ...]:
    from swinkit.deploy.inputs import parse_shape

    try:
        return parse_shape(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _kinds(text: str) -> tuple[str, ...]:
    from swinkit.deploy.visualize import KINDS

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if not kinds or any(k not in KINDS for k in kinds):
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(KINDS)}, got {text!r}")
    return kinds


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_OR_CKPT",
                        help="a checkpoint file (any layout swinkit.load_model reads) or a registered model name")
    parser.add_argument("--weights", metavar="PATH", help="weights to load into a model given by name")
    parser.add_argument("--model-kwargs", metavar="YAML",
                        help="builder arguments for a model given by name, e.g. '{num_classes: 10}'")


def _check_model_name(name: str) -> None:
    from swinkit.models.registry import is_model, list_models

    if not is_model(name):
        raise CLIError(f"{name!r} is neither a checkpoint file nor a registered model; models: "
                       f"{', '.join(list_models())}")


def resolve_model(spec: str, weights: str | None = None, model_kwargs: str | None = None):
    """A model from a checkpoint file (``swinkit.load_model`` builds it) or a registry name (+ optional weights)."""
    import swinkit

    if Path(spec).is_file():
        if weights or model_kwargs:
            raise CLIError("--weights and --model-kwargs go with a model name; a checkpoint file builds its own model")
        return swinkit.load_model(spec)
    _check_model_name(spec)
    model = swinkit.create_model(spec, **yaml_option("model_kwargs", model_kwargs))
    if weights:
        swinkit.load_checkpoint(model, weights)
    return model


def register(subparsers) -> None:
    export = subparsers.add_parser(
        "export", help="export a model to ONNX (.onnx) or torch.export (.pt2), checked against PyTorch",
        description="Export through torch.export with a dynamic batch axis (and dynamic spatial/temporal sizes "
                    "where the graph allows it), write ONNX (opset >= 17) or an ExportedProgram, run the written "
                    "file on several inputs (onnxruntime / torch.export.load) and compare with PyTorch. The file "
                    "is written only when the comparison passes.")
    _add_model_arguments(export)
    export.add_argument("out", metavar="OUT", help="output file: .onnx or .pt2")
    export.add_argument("--input", type=_shape, metavar="SHAPE",
                        help="traced input, e.g. 1x3x224x224 or 1x3x32x224x224 (default: the papers' input)")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17 (default: 18)")
    export.add_argument("--static", action="store_true", help="keep spatial/temporal sizes fixed (batch stays dynamic)")
    export.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest max-abs difference accepted against PyTorch (default: 1e-4)")
    export.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    export.set_defaults(func=run_export)

    info = subparsers.add_parser(
        "info", help="parameters, multiply-adds per stage, activation memory and output shapes",
        description="Count parameters and multiply-adds (attention included; the papers' convention) per stage on "
                    "the meta device, estimate the activation memory of a training forward, and list output "
                    "shapes. No weights are allocated.")
    _add_model_arguments(info)
    info.add_argument("--input", type=_shape, metavar="SHAPE",
                      help="input shape, e.g. 1x3x224x224 or 1x3x32x224x224 (default: the papers' input)")
    info.add_argument("--json", action="store_true", help="print the figures as JSON")
    info.set_defaults(func=run_info)

    visualize = subparsers.add_parser(
        "visualize", help="PNG pictures of windows, attention maps and Grad-CAM for an image or a video",
        description="Write <input>_windows.png (window partition and shifted-window regions of a stage; Swin "
                    "only), <input>_attention.png (attention of one query token in a block, mapped back to "
                    "pixels and frames) and <input>_cam.png (Grad-CAM of a class, per frame for video).")
    _add_model_arguments(visualize)
    visualize.add_argument("input", metavar="INPUT", help="an image (image models) or a video (video models)")
    visualize.add_argument("--out-dir", default=".", help="folder for the PNG files (default: .)")
    visualize.add_argument("--what", type=_kinds, default=None,
                           help="comma-separated: windows,attention,cam (default: all that apply to the model)")
    visualize.add_argument("--stage", type=int, default=None,
                           help="stage, 1-based as in swinkit info (default: the second-to-last)")
    visualize.add_argument("--block", type=int, default=-1, help="block of the stage, 0-based (default: the last)")
    visualize.add_argument("--head", type=int, default=None, help="attention head (default: mean over heads)")
    visualize.add_argument("--query", type=int_list, default=None, metavar="Y,X|T,Y,X",
                           help="query pixel of the attention map (video: frame,y,x); default: the centre")
    visualize.add_argument("--class", dest="target_class", type=int, default=None,
                           help="class index for Grad-CAM (default: the predicted class)")
    visualize.add_argument("--classes", metavar="FILE", help="classes.txt with one class name per line")
    visualize.add_argument("--size", type=int, default=224, help="input side after resize and crop (default: 224)")
    visualize.add_argument("--frames", type=int, default=32, help="frames of the video clip (default: 32)")
    visualize.add_argument("--frame-interval", type=int, default=2, help="frame step in the video (default: 2)")
    visualize.add_argument("--max-frames", type=int, default=8, help="frames drawn per video figure (default: 8)")
    visualize.set_defaults(func=run_visualize)


def run_export(args: argparse.Namespace) -> int:
    from swinkit.deploy.export import MIN_OPSET, export_model

    if args.opset < MIN_OPSET:
        raise CLIError(f"--opset must be >= {MIN_OPSET}, got {args.opset}")
    model = resolve_model(args.model, args.weights, args.model_kwargs)
    if not (args.weights or Path(args.model).is_file()):
        print(f"note: {args.model} has random weights (pass --weights to export trained ones)", file=sys.stderr)
    report = export_model(model, args.out, args.input, opset=args.opset, dynamic_spatial=not args.static,
                          check=not args.no_check, tolerance=args.tolerance)
    print(report.summary())
    return 0


def run_info(args: argparse.Namespace) -> int:
    from swinkit.deploy.info import model_info

    if Path(args.model).is_file():
        model = resolve_model(args.model, args.weights, args.model_kwargs)
        info = dataclasses.replace(model_info(model, args.input), name=Path(args.model).name)
    else:
        _check_model_name(args.model)
        if args.weights:
            raise CLIError("info needs no --weights: its figures do not depend on them")
        info = model_info(args.model, args.input, **yaml_option("model_kwargs", args.model_kwargs))
    print(json.dumps(info.to_dict(), indent=2) if args.json else info.format())
    return 0


def run_visualize(args: argparse.Namespace) -> int:
    from swinkit.data import read_classes_file
    from swinkit.deploy.inputs import num_input_axes
    from swinkit.deploy.media import load_media
    from swinkit.deploy.visualize import visualize

    model = resolve_model(args.model, args.weights, args.model_kwargs)
    if not (args.weights or Path(args.model).is_file()):
        print(f"note: {args.model} has random weights; pass --weights to see what a trained model does",
              file=sys.stderr)
    video = num_input_axes(model) == 3
    has_windows = hasattr(model, "layers")
    kinds = args.what or (("windows", "attention", "cam") if has_windows else ("attention", "cam"))
    if "windows" in kinds and not has_windows:
        raise CLIError(f"--what windows needs a Swin / Video Swin model; {args.model} has no windows")
    if args.query is not None and len(args.query) != (3 if video else 2):
        raise CLIError(f"--query takes {'frame,y,x' if video else 'y,x'} for this model, got {args.query}")
    if args.stage is not None and args.stage < 1:
        raise CLIError(f"--stage is 1-based, got {args.stage}")
    class_names = read_classes_file(args.classes) if args.classes else None
    media = load_media(args.input, video, args.size, args.frames, args.frame_interval)
    written = visualize(model, media, args.out_dir, kinds, stage=None if args.stage is None else args.stage - 1,
                        block=args.block, head=args.head, query=args.query, target_class=args.target_class,
                        class_names=class_names, max_frames=args.max_frames)
    for kind, path in written.items():
        print(f"wrote {path} ({kind})")
    return 0
