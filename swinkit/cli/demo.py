"""``swinkit demo``: synthetic data -> train from scratch on CPU -> multi-view test -> predict.

Every step goes through the same code as the commands a user would type (``make-dataset``,
``train``, ``eval``, ``predict``); the demo only chooses the settings and prints a summary.
The video task also runs a control: the test clips with their frames shuffled in time, which a
model that really uses motion cannot classify (see :data:`CONTROL_NOTE`).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from swinkit.cli import CLIError

# The demo recipes: small models and data sized for a 2-core CPU (a few minutes for video).
# Test views: 3 clips of 8 frames spread over the 16-frame videos x 1 crop (the frames are square and
# as small as the crop, so three spatial crops would coincide).
VIDEO_DEMO = {
    "data": {"num_train": 320, "num_val": 80, "num_test": 80, "frames": 16, "size": 32},
    "train": {"model": "video_swin_t",
              "model_kwargs": "{embed_dim: 16, depths: [1, 1, 1], num_heads: [1, 2, 4], window_size: [4, 4, 4]}",
              "data_options": "{clip_len: 8, frame_interval: 1, size: 32, area_range: [0.6, 1.0], "
                              "test_clips: 3, test_crops: 1}",
              "epochs": 30, "batch_size": 16, "lr": 2e-3, "warmup_lr": 1e-4, "min_lr": 1e-5, "warmup_epochs": 1,
              "weight_decay": 0.05, "drop_path_rate": 0.1, "label_smoothing": 0.1, "max_views_per_batch": 6},
}
# Shapes from scratch: Shunted's convolutional stem learns them in a few epochs; a 2D Swin of this size
# needs far more data and epochs (about 75 % after 10 epochs on 2000 images).
IMAGE_DEMO = {
    "data": {"num_train": 1600, "num_val": 160, "num_test": 160, "size": 32},
    "train": {"model": "shunted_t",
              "model_kwargs": "{embed_dims: [16, 32, 64, 128], depths: [1, 1, 1, 1], num_heads: [2, 2, 4, 8]}",
              "data_options": "{size: 32, crop_pct: 1.0, area_range: [0.6, 1.0]}",
              "epochs": 10, "batch_size": 32, "lr": 2e-3, "warmup_lr": 1e-4, "min_lr": 1e-5, "warmup_epochs": 1,
              "weight_decay": 0.05, "drop_path_rate": 0.1, "label_smoothing": 0.1},
}
SWIN_IMAGE_MODEL = {"model": "swin_t",
                    "model_kwargs": "{embed_dim: 16, depths: [1, 1, 2], num_heads: [1, 2, 4], window_size: 4}"}
# --fast: the same steps on a handful of samples for one epoch (the test suite runs it).
FAST_DATA = {"num_train": 16, "num_val": 8, "num_test": 8}
FAST_TRAIN = {"epochs": 1, "batch_size": 8, "warmup_epochs": 0}

CONTROL_NOTE = ("chance is 1/{k}; each default motion class has a time-reversed twin (up/down, grow/shrink) that "
                "shuffled frames cannot tell apart, so a model that uses only appearance could reach 50 %")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="synthetic data -> train a small model on CPU -> multi-view test -> predict",
        description="Generate a synthetic dataset, train a small Video Swin (or an image model with --task image) "
                    "from scratch, evaluate it with multi-view testing, show per-class accuracy and the confusion "
                    "matrix, a frame-shuffled control (video) and predictions on held-out files.")
    parser.add_argument("--task", choices=("video", "image"), default="video", help="default: video")
    parser.add_argument("--image-model", choices=("shunted", "swin"), default="shunted",
                        help="model family of --task image (default: shunted)")
    parser.add_argument("--workdir", default="swinkit-demo", metavar="DIR",
                        help="folder for the data and the run (default: ./swinkit-demo)")
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument("--num-workers", type=int, default=1, help="data-loading workers (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default: 0)")
    parser.add_argument("--fast", action="store_true", help="tiny data and one epoch (a smoke test, not a result)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    parser.set_defaults(func=run_demo)


class ShuffledFrames(Dataset):
    """Items of a video dataset with their frames permuted in time: inputs (..., T, H, W), one fixed
    random permutation per item (the same for all of its views)."""

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed
        self.classes = dataset.classes
        self.kind = dataset.kind

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        if item["inputs"] is not None:
            frames = item["inputs"].shape[-3]
            order = torch.randperm(frames, generator=torch.Generator().manual_seed(self.seed * 100_003 + index))
            item["inputs"] = item["inputs"][..., order, :, :]
        return item


def _options(settings: dict) -> list[str]:
    """{'batch_size': 16} -> ['--batch-size', '16']."""
    args = []
    for name, value in settings.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    return args


def _parse(argv: list[str]) -> argparse.Namespace:
    from swinkit.cli import build_parser

    return build_parser().parse_args(argv)


def _step(number: int, text: str) -> None:
    print(f"\n[{number}/5] {text}", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise CLIError(f"--epochs must be >= 1, got {args.epochs}")
    if args.num_workers < 0:
        raise CLIError(f"--num-workers must be >= 0, got {args.num_workers}")
    # Leave a core to each decoding worker: on a small CPU, compute threads competing with the
    # decoders are several times slower than one thread per core.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - args.num_workers))
    try:
        return _demo(args)
    finally:
        torch.set_num_threads(threads)


def _demo(args: argparse.Namespace) -> int:
    from swinkit.cli.train import evaluate_split, format_metrics, predict_files, train_from_args
    from swinkit.data import read_list_file
    from swinkit.data.synthetic import make_dataset, make_image_dataset

    started = time.perf_counter()
    recipe = VIDEO_DEMO if args.task == "video" else IMAGE_DEMO
    data_settings, train_settings = dict(recipe["data"]), dict(recipe["train"])
    if args.task == "image" and args.image_model == "swin":
        train_settings.update(SWIN_IMAGE_MODEL)
    if args.fast:
        data_settings.update(FAST_DATA)
        train_settings.update(FAST_TRAIN)
    if args.epochs is not None:
        train_settings["epochs"] = args.epochs
    workdir = Path(args.workdir) / args.task
    data_dir, run_dir = workdir / "data", workdir / "run"
    common = ["--no-progress"] if not args.progress else []

    _step(1, f"synthetic {args.task} dataset -> {data_dir}")
    make = make_dataset if args.task == "video" else make_image_dataset
    summary = make(data_dir, seed=args.seed, overwrite=True, **data_settings)
    counts = summary["counts"]
    print(f"  {counts['train']} train / {counts['val']} val / {counts['test']} test files, classes "
          f"{', '.join(summary['classes'])} ({summary['seconds']:.1f} s)")

    _step(2, f"training {train_settings['model']} from scratch on CPU ({train_settings['epochs']} epochs)")
    train_args = _parse(["train", "--data-root", str(data_dir), "--output-dir", str(run_dir), "--device", "cpu",
                         "--seed", str(args.seed), "--num-workers", str(args.num_workers)]
                        + _options(train_settings) + common)
    trainer = train_from_args(train_args)
    parameters = sum(p.numel() for p in trainer.model.parameters())
    train_seconds = sum(r["epoch_time_s"] for r in trainer.history)
    print(f"  {parameters:,} parameters, {train_seconds:.0f} s of training")
    checkpoint = run_dir / ("best.pt" if (run_dir / "best.pt").is_file() else "last.pt")

    views = "one view per file" if args.task == "image" else "multi-view: clips x crops per video, 'prob' averaging"
    _step(3, f"test split, {views} ({checkpoint.name})")
    eval_args = _parse(["eval", "--checkpoint", str(checkpoint), "--data-root", str(data_dir), "--split", "test",
                        "--device", "cpu", "--batch-size", "4", "--num-workers", str(args.num_workers)] + common)
    metrics, _, classes = evaluate_split(eval_args)
    print(format_metrics(metrics, classes))

    control_top1 = None
    if args.task == "video":
        _step(4, "control: the same test clips with their frames shuffled in time")
        control, _, _ = evaluate_split(eval_args, wrap_dataset=lambda ds: ShuffledFrames(ds, args.seed))
        control_top1 = control["top1"]
        print(f"  top-1 {control_top1:.4f} (ordered frames: {metrics['top1']:.4f}); "
              + CONTROL_NOTE.format(k=len(classes)))
    else:
        _step(4, "control: skipped (only the video task depends on time)")

    _step(5, "predict on held-out test files")
    samples = read_list_file(data_dir / "test.txt", data_dir)
    picked = [next(s for s in samples if s[1] == label) for label in range(len(classes))
              if any(s[1] == label for s in samples)]
    predict_args = _parse(["predict", str(data_dir / "test"), "--checkpoint", str(checkpoint), "--topk", "1",
                           "--device", "cpu"] + common)
    results = predict_files(predict_args, [path for path, _ in picked])
    truth = {Path(path).resolve(): label for path, label in picked}  # records may name files absolutely
    for record in results:
        name = Path(record["path"]).name
        if "error" in record:
            print(f"  {name}: unreadable ({record['error']})")
            continue
        top, label = record["top"][0], truth[Path(record["path"]).resolve()]
        mark = "ok" if top["label"] == label else "WRONG"
        print(f"  {name}: true {classes[label]:<10} predicted {top['class']:<10} p={top['prob']:.2f}  {mark}")

    total = time.perf_counter() - started
    print(f"\nsummary: test top-1 {metrics['top1']:.4f}, mean class acc {metrics['mean_class_acc']:.4f}"
          + (f", frame-shuffled control {control_top1:.4f}" if control_top1 is not None else "")
          + f"; {total / 60:.1f} min in all")
    print(f"checkpoint {checkpoint}, curves {run_dir / 'curves.png'}, log {run_dir / 'log.jsonl'}")
    return 0
