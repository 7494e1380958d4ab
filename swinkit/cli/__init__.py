"""``swinkit`` command line: one module per command group, each with ``register(subparsers)``.

Every command reports user errors (bad arguments, missing files, incompatible options)
as one line on stderr and a non-zero exit code, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Command-group modules inside swinkit.cli, in the order their commands are listed.
COMMAND_MODULES = ("checkpoints", "train", "data", "demo", "bench", "deploy")


class CLIError(Exception):
    """A user-facing error: printed as ``swinkit: error: <message>`` with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse errors -> same one-line format
        self.print_usage(sys.stderr)
        raise CLIError(message)


def int_list(text: str, length: int | None = None, minimum: int | None = None) -> tuple[int, ...]:
    """argparse type: comma-separated integers such as ``8,7,7`` (optionally exactly ``length`` of them,
    each >= ``minimum``)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 8,7,7, got {text!r}") from None
    if (length is not None and len(values) != length) or (minimum is not None and min(values) < minimum):
        count = f"{length} " if length is not None else ""
        bound = f" >= {minimum}" if minimum is not None else ""
        raise argparse.ArgumentTypeError(f"expected {count}comma-separated integers{bound}, got {text!r}")
    return values


def yaml_option(name: str, text: str | None) -> dict:
    """The YAML mapping given for the option / TrainConfig field ``name`` (e.g. --model-kwargs); {} if absent."""
    from swinkit.engine.config import coerce

    try:
        return coerce(name, text) if text else {}
    except ValueError as err:
        raise CLIError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="swinkit", description="Swin, Video Swin and Shunted Transformers.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"swinkit.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        result = args.func(args)
        return int(result or 0)
    except CLIError as err:
        print(f"swinkit: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as err:
        # Library errors are written to be read by people: show the message only.
        print(f"swinkit: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("swinkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
