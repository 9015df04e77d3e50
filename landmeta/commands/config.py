"""`landmeta config`: print the resolved configuration (file + overrides) as YAML."""

from __future__ import annotations

import argparse

from landmeta.commands import add_config_args
from landmeta.config import dump_config, load_config


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `config` sub-command to the parser."""
    parser = sub.add_parser("config", help="print the resolved config (checks keys and types)")
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `landmeta config`; returns the exit status."""
    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0
