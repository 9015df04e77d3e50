"""`landmeta config`: print the resolved configuration (file + overrides) as YAML."""

from __future__ import annotations

import argparse

from landmeta.commands import add_config_args
from landmeta.config import dump_config, load_config


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="print the resolved config (checks keys and types)")
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0
