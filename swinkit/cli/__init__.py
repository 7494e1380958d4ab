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
