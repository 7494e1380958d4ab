"""``swinkit make-dataset``: write a synthetic video (or image) classification dataset."""
from __future__ import annotations

import argparse

from swinkit.cli import CLIError


def _class_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated class names")
    return names


def register(subparsers) -> None:
    from swinkit.data.synthetic import DEFAULT_MOTION_CLASSES, MOTION_CLASSES, SHAPE_CLASSES

    parser = subparsers.add_parser(
        "make-dataset", help="write a synthetic action (or shape) dataset: videos, list files, classes.txt",
        description="Write a synthetic dataset whose class can only be told from motion over time: "
                    "<split>/<class>/*.mp4 plus train.txt, val.txt, test.txt (relative/path label) and "
                    "classes.txt. Deterministic given --seed.")
    parser.add_argument("out_dir", metavar="DIR", help="folder to create (must be empty or absent)")
    parser.add_argument("--kind", choices=("video", "image"), default="video",
                        help="video: motion classes (.mp4); image: shape classes (.png) (default: video)")
    parser.add_argument("--num-train", type=int, default=None, help="training samples (video 320, image 400)")
    parser.add_argument("--num-val", type=int, default=80, help="validation samples (default: 80)")
    parser.add_argument("--num-test", type=int, default=80, help="test samples (default: 80)")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: 16; video only)")
    parser.add_argument("--size", type=int, default=32, help="frame / image side in pixels (default: 32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--classes", type=_class_list, default=None,
                        help=f"comma-separated class names; video: any of {', '.join(MOTION_CLASSES)} "
                             f"(default: {', '.join(DEFAULT_MOTION_CLASSES)}); image: any of "
                             f"{', '.join(SHAPE_CLASSES)} (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset made earlier in DIR")
    parser.set_defaults(func=run_make_dataset)


def run_make_dataset(args: argparse.Namespace) -> int:
    from swinkit.data.synthetic import make_dataset, make_image_dataset

    common = {"num_val": args.num_val, "num_test": args.num_test, "size": args.size, "seed": args.seed,
              "overwrite": args.overwrite}
    if args.num_train is not None:
        common["num_train"] = args.num_train
    if args.classes is not None:
        common["classes"] = args.classes
    if args.kind == "image":
        if args.frames is not None:
            raise CLIError("--frames applies to --kind video only")
        summary = make_image_dataset(args.out_dir, **common)
        shape = f"{summary['size']}x{summary['size']} images"
    else:
        summary = make_dataset(args.out_dir, frames=args.frames or 16, **common)
        shape = f"{summary['frames']}x{summary['size']}x{summary['size']} clips ({summary['codec']})"
    counts = summary["counts"]
    print(f"wrote {counts['train']} train / {counts['val']} val / {counts['test']} test {shape}, "
          f"{len(summary['classes'])} classes ({', '.join(summary['classes'])}) to {args.out_dir} "
          f"in {summary['seconds']:.1f} s")
    if not summary["flip_safe"]:
        print("note: these classes change under a horizontal flip; train them with flip=False")
    return 0
