"""One module per CLI sub-command; each exposes `register(subparsers)`."""

from __future__ import annotations

import argparse

from landmeta.config import Bound
from landmeta.errors import ConfigError


def add_config_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """`--config FILE` and repeatable `--set section.key=value`, shared by every configured command."""
    parser.add_argument("--config", required=required, help="YAML config (a path, or a name in configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set meta.inner_steps=2 (repeatable)")


def add_number(parser: argparse.ArgumentParser, flag: str, kind: type, bound: Bound, **kwargs) -> None:
    """Add a numeric option whose value must lie within `bound`; `check_numbers` enforces it."""
    action = parser.add_argument(flag, type=kind, **kwargs)
    known = parser.get_default("numbers") or {}
    parser.set_defaults(numbers={**known, action.dest: (flag, bound)})


def check_numbers(args: argparse.Namespace) -> None:
    """ConfigError naming the option, its range and the value of the first number out of range."""
    for dest, (flag, bound) in (getattr(args, "numbers", None) or {}).items():
        value = getattr(args, dest)
        problem = None if value is None else bound.violation(value)
        if problem:
            raise ConfigError(f"{flag} {problem}")
