"""One module per CLI sub-command; each exposes `register(subparsers)`."""

from __future__ import annotations

import argparse


def add_config_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """`--config FILE` and repeatable `--set section.key=value`, shared by every configured command."""
    parser.add_argument("--config", required=required, help="YAML config (a path, or a name in configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set meta.inner_steps=2 (repeatable)")
