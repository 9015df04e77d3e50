"""The `landmeta` console script: sub-commands parse arguments and call the library.

Each sub-command lives in `landmeta/commands/<name>.py` with `register(subparsers)`, which adds
its parser and sets `func(args) -> int`. Library errors become one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import Any

from landmeta import __version__
from landmeta.errors import LandmetaError, LandmetaWarning

COMMANDS = ["config", "synth", "preprocess", "inspect", "train", "evaluate", "report", "adapt", "predict"]


def build_parser() -> argparse.ArgumentParser:
    """The `landmeta` argument parser, one sub-command per module of `landmeta.commands`."""
    parser = argparse.ArgumentParser(
        prog="landmeta", description="Few-shot land-cover mapping by meta-learning over regions."
    )
    parser.add_argument("--version", action="version", version=f"landmeta {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"landmeta.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; a LandmetaError is one line on stderr and exit 2, Ctrl-C exit 130."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", LandmetaWarning)
            warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
            return int(args.func(args) or 0)
    except LandmetaError as exc:
        print(f"landmeta {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"landmeta {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that closed early (e.g. `| head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _one_line_warnings(command: str, default: Any) -> Any:
    """A `warnings.showwarning` printing the library's warnings as one line each."""
    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, LandmetaWarning):
            print(f"landmeta {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, *args, **kwargs)
    return show


if __name__ == "__main__":
    sys.exit(main())
