"""``swinkit train | eval | predict | extract``.

train options are generated from :class:`swinkit.engine.TrainConfig` (``--batch-size`` sets
``batch_size``); precedence: --preset (or the checkpoint of --resume) < --config YAML < options.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from swinkit.cli import CLIError, yaml_option


def register(subparsers) -> None:
    _register_train(subparsers)
    _register_eval(subparsers)
    _register_predict(subparsers)
    _register_extract(subparsers)


# ----------------------------------------------------------------------------------------------- train
def _register_train(subparsers) -> None:
    from swinkit.engine.config import PRESETS, base_type, config_fields, field_types

    parser = subparsers.add_parser(
        "train", help="train a model (single process, or torchrun --nproc-per-node N -m swinkit train ...)",
        description="Train a Swin / Video Swin / Shunted model on a folder of videos or images. Writes last.pt, "
                    "best.pt, log.jsonl and curves.png to --output-dir. Values: --preset (or the checkpoint "
                    "being resumed) < --config YAML < the options below.")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from an official recipe")
    parser.add_argument("--config", metavar="YAML", help="YAML file of option: value pairs (names as below)")
    parser.add_argument("--resume", nargs="?", const=True, metavar="PATH",
                        help="continue a run from PATH (a last.pt or its folder; default: --output-dir)")
    types = field_types()
    for name, field in config_fields().items():
        flag = "--" + name.replace("_", "-")
        kind = base_type(types[name])
        options = {"dest": name, "default": argparse.SUPPRESS, "help": field.metadata["help"]}
        if "choices" in field.metadata:
            options["choices"] = field.metadata["choices"]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        else:
            parser.add_argument(flag, metavar=_metavar(kind), **options)
    parser.set_defaults(func=run_train)


def _metavar(kind) -> str:
    return {int: "N", float: "X", dict: "YAML", tuple: "YAML"}.get(kind, "STR")


def build_config(args: argparse.Namespace):
    """(TrainConfig, checkpoint to resume or None) from parsed ``train`` arguments."""
    from swinkit.engine.config import TrainConfig, config_fields, from_dict, load_yaml, merge, preset
    from swinkit.engine.state import load_training_checkpoint

    given = {name: getattr(args, name) for name in config_fields() if hasattr(args, name)}
    from_yaml = load_yaml(args.config) if args.config else {}
    try:
        resume = None
        if args.resume is not None:
            if args.preset:
                raise CLIError("--preset cannot be combined with --resume (the run keeps its own configuration)")
            if args.resume is True:
                output_dir = given.get("output_dir", from_yaml.get("output_dir", TrainConfig.output_dir))
                resume_path = Path(output_dir) / "last.pt"
            else:
                resume_path = Path(args.resume)
            if resume_path.is_dir():
                resume_path = resume_path / "last.pt"
            if not resume_path.is_file():
                raise CLIError(f"nothing to resume: {resume_path} does not exist")
            resume = load_training_checkpoint(resume_path)
            base = from_dict({**resume["config"], "stop_after_steps": None, "output_dir": str(resume_path.parent)})
        elif args.preset:
            base = preset(args.preset)
        else:
            base = TrainConfig()
        cfg = merge(merge(base, from_yaml), given)
    except ValueError as err:
        raise CLIError(str(err)) from None
    return cfg, resume


def run_train(args: argparse.Namespace) -> int:
    trainer = train_from_args(args)
    if trainer.is_main:
        out = Path(trainer.cfg.output_dir)
        best = f"  (best val top-1 {trainer.best_top1:.4f}: {out / 'best.pt'})" if trainer.best_top1 is not None else ""
        print(f"checkpoint: {out / 'last.pt'}{best}")
        if trainer.history:
            print(f"log: {out / 'log.jsonl'}  curves: {out / 'curves.png'}")
    return 0


def train_from_args(args: argparse.Namespace):
    """Run ``train`` arguments; returns the finished :class:`~swinkit.engine.trainer.Trainer`."""
    from swinkit.engine import distributed
    from swinkit.engine.runner import train

    cfg, resume = build_config(args)
    if cfg.data_root is None:
        raise CLIError("no training data: pass --data-root DIR (a folder with train.txt or train/<class>/ files)")
    try:
        return train(cfg, resume)
    except FloatingPointError as err:
        raise CLIError(str(err)) from None
    finally:
        distributed.shutdown()


# ------------------------------------------------------------------------------- eval / predict / extract
def _add_model_source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (a training checkpoint, or a registered model with weights)")
    group.add_argument("--checkpoint", metavar="PATH", help="last.pt / best.pt of `swinkit train` (or its folder)")
    group.add_argument("--model", metavar="NAME", help="registered model name, used with --weights")
    group.add_argument("--weights", metavar="PATH", help="weights in any layout swinkit.load_checkpoint reads")
    group.add_argument("--model-kwargs", metavar="YAML", help="constructor overrides for --model, e.g. "
                                                              "'{num_classes: 400}'")
    group.add_argument("--classes", metavar="FILE", help="class names, one per line (with --model)")
    group.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    parser.add_argument("--data-options", metavar="YAML",
                        help="override the data options (e.g. '{test_clips: 4, test_crops: 3}')")
    parser.add_argument("--batch-size", type=_positive_int, default=1, help="files per forward (default: 1)")
    parser.add_argument("--num-workers", type=_non_negative_int, default=0, help="data-loading workers (default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16", "amp"),
                        help="inference precision (default: fp32)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def load_model(args: argparse.Namespace):
    """(model on its device in eval mode, class names, kind, data options, precision) from the arguments."""
    from swinkit import create_model, load_checkpoint
    from swinkit.data import read_classes_file
    from swinkit.engine import amp
    from swinkit.engine.inference import model_kind
    from swinkit.engine.runner import rebuild_model
    from swinkit.engine.state import load_training_checkpoint

    if args.checkpoint and (args.model or args.weights):
        raise CLIError("pass either --checkpoint or --model/--weights, not both")
    options = yaml_option("data_options", args.data_options)
    if args.checkpoint:
        if args.classes or args.model_kwargs:
            raise CLIError("--classes and --model-kwargs go with --model; a checkpoint carries its own")
        ckpt = load_training_checkpoint(args.checkpoint)
        model, classes = rebuild_model(ckpt, args.ema), list(ckpt["classes"])
        kind, options = ckpt["kind"], {**ckpt.get("data_options", {}), **options}
    elif args.model:
        if not args.weights:
            raise CLIError("--model needs --weights (a model with random weights predicts nothing useful)")
        if args.ema:
            raise CLIError("--ema needs --checkpoint")
        model = create_model(args.model, **yaml_option("model_kwargs", args.model_kwargs))
        load_checkpoint(model, args.weights)
        model.eval()
        classes = read_classes_file(args.classes) if args.classes else [str(i) for i in range(model.num_classes)]
        if len(classes) != model.num_classes:
            raise CLIError(f"{args.classes} names {len(classes)} classes but the model has {model.num_classes}")
        kind = model_kind(model)
    else:
        raise CLIError("no model: pass --checkpoint PATH (from swinkit train) or --model NAME --weights PATH")
    device = amp.resolve_device(args.device)
    return model.to(device), classes, kind, options, amp.resolve_precision(args.precision, device)


def _register_eval(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="top-1/top-5/mean class accuracy and confusion matrix, with multi-view testing",
        description="Evaluate a model on one split. Video test splits use test_clips x test_crops views per "
                    "video, averaged as softmax probabilities ('prob') or logits ('score').")
    parser.add_argument("--data-root", required=True, metavar="DIR", help="dataset folder")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="default: test")
    parser.add_argument("--list", dest="list_file", metavar="FILE", help="annotation list (default: <split>.txt)")
    parser.add_argument("--average", default="prob", choices=("prob", "score"), help="view averaging")
    parser.add_argument("--max-views-per-batch", type=_positive_int, default=4,
                        help="views per forward in multi-view testing (default: 4)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_model_source(parser)
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    metrics, skipped, classes = evaluate_split(args)
    if args.json:
        out = {k: v for k, v in metrics.items() if k != "confusion"}
        out.update(confusion=metrics["confusion"].tolist(), classes=classes,
                   skipped=[{"path": p, "error": e} for p, e in skipped])
        print(json.dumps(out, indent=1))
    else:
        print(format_metrics(metrics, classes))
        for path, error in skipped:
            print(f"skipped unreadable {path}: {error}")
    return 0


def evaluate_split(args: argparse.Namespace, wrap_dataset=None) -> tuple[dict, list, list[str]]:
    """(metrics, skipped samples, class names) of ``eval`` arguments; ``wrap_dataset(dataset)`` may
    replace the dataset (the demo's frame-shuffled control)."""
    from swinkit.data import build_dataset, make_loader
    from swinkit.engine.evaluate import evaluate

    model, classes, kind, options, precision = load_model(args)
    dataset = build_dataset(args.data_root, args.list_file, kind=kind, split=args.split, classes=classes, **options)
    if wrap_dataset is not None:
        dataset = wrap_dataset(dataset)
    loader = make_loader(dataset, args.batch_size, args.num_workers, shuffle=False)
    metrics, skipped = evaluate(model, loader, len(classes), args.average, args.max_views_per_batch, precision,
                                progress=args.progress, desc=args.split)
    return metrics, skipped, classes


def format_metrics(metrics: dict, classes: list[str]) -> str:
    """Top-1/top-5/mean class accuracy, per-class accuracy and the confusion matrix as text."""
    from swinkit.engine.metrics import per_class_accuracy

    confusion = metrics["confusion"]
    lines = [f"samples {metrics['count']}  top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  "
             f"mean class acc {metrics['mean_class_acc']:.4f}  loss {metrics['loss']:.4f}", "", "per-class accuracy:"]
    width = max(len(c) for c in classes)
    for name, acc, total in zip(classes, per_class_accuracy(confusion).tolist(), confusion.sum(1).tolist()):
        lines.append(f"  {name:<{width}}  {acc:.3f}  ({total} samples)")
    lines += ["", "confusion matrix (rows: true class, columns: predicted):"]
    cell = max(4, len(str(int(confusion.max()))) + 1)
    header = " " * (width + 2) + "".join(f"{i:>{cell}}" for i in range(len(classes)))
    lines.append(header)
    for i, (name, row) in enumerate(zip(classes, confusion.tolist())):
        lines.append(f"  {name:<{width}}" + "".join(f"{v:>{cell}}" for v in row) + f"   ({i})")
    return "\n".join(lines)


def _register_predict(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="top-k classes with probabilities for a video/image file or folder",
        description="Predict the top-k classes of every video or image in FILE_OR_DIR (folders are searched "
                    "recursively). Videos use the test views of the data options (clips x crops).")
    parser.add_argument("path", metavar="FILE_OR_DIR")
    parser.add_argument("--topk", type=_positive_int, default=5, help="classes per file (default: 5)")
    parser.add_argument("--average", default="prob", choices=("prob", "score"), help="view averaging")
    parser.add_argument("--max-views-per-batch", type=_positive_int, default=4, help="views per forward")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_model_source(parser)
    parser.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    results = predict_files(args)
    print(json.dumps(results, indent=1) if args.json else format_predictions(results))
    return 1 if all("error" in r for r in results) else 0


def predict_files(args: argparse.Namespace, files: list[str] | None = None) -> list[dict]:
    """Prediction records of ``predict`` arguments (``files`` replaces the files found under args.path)."""
    from swinkit.engine.inference import files_dataset, media_files, predict

    model, classes, kind, options, precision = load_model(args)
    files = files if files is not None else media_files(args.path, kind)
    dataset = files_dataset(files, kind, "test", classes, options)
    return predict(model, dataset, classes, args.topk, args.average, args.max_views_per_batch, args.batch_size,
                   args.num_workers, precision, progress=args.progress)


def format_predictions(results: list[dict]) -> str:
    """A table: one row per file, the top-k classes with probabilities."""
    width = max(len(r["path"]) for r in results)
    rows = []
    for record in results:
        if "error" in record:
            rows.append(f"{record['path']:<{width}}  ERROR {record['error']}")
        else:
            rows.append(f"{record['path']:<{width}}  " +
                        "  ".join(f"{t['class']} {t['prob']:.3f}" for t in record["top"]))
    return "\n".join(rows)


def _register_extract(subparsers) -> None:
    parser = subparsers.add_parser(
        "extract", help="pooled or per-stage features of a folder to .safetensors / .npy",
        description="Run the backbone on every video or image in FILE_OR_DIR (one centred view each) and save "
                    "pooled features (N, C) or stage maps (N, C_i, *grid_i).")
    parser.add_argument("path", metavar="FILE_OR_DIR")
    parser.add_argument("--out", required=True, metavar="FILE", help="output .safetensors or .npy")
    parser.add_argument("--stages", default="pooled",
                        help="'pooled' (default), 'all', or comma-separated stage indices such as '0,3'")
    _add_model_source(parser)
    parser.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    from swinkit.engine.inference import (extract_features, files_dataset, media_files, parse_stages,
                                          save_features)

    if Path(args.out).suffix not in (".safetensors", ".npy"):
        raise CLIError(f"--out must end in .safetensors or .npy, got {args.out}")
    model, classes, kind, options, precision = load_model(args)
    num_stages = len(getattr(model.config, "depths"))
    try:
        stages = parse_stages(args.stages, num_stages)
    except ValueError as err:
        raise CLIError(str(err)) from None
    files = media_files(args.path, kind)
    dataset = files_dataset(files, kind, "val", classes, options)
    features, paths, skipped = extract_features(model, dataset, stages, args.batch_size, args.num_workers,
                                                precision, progress=args.progress)
    written = save_features(features, paths, args.out)
    for name, value in features.items():
        print(f"{name}: {tuple(value.shape)}")
    for path, error in skipped:
        print(f"skipped unreadable {path}: {error}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
