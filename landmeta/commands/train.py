"""`landmeta train`: meta-train (or pretrain) a model on a chip store into a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from landmeta.commands import add_config_args
from landmeta.config import load_config
from landmeta.errors import ConfigError

METHODS = ["maml", "fomaml", "metasgd", "anil", "boil", "pretrain"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="meta-train a model on a chip store (or pretrain a baseline)",
                            description="Meta-train a classifier or U-Net over the meta-train regions of "
                                        "a chip store, validating on saved meta-val tasks; writes "
                                        "best.pt, last.pt, metrics.csv and config.yaml into --out.")
    add_config_args(parser)
    parser.add_argument("--data", required=True, type=Path, help="chip store, e.g. data/sen12ms")
    parser.add_argument("--out", required=True, type=Path, help="run folder, e.g. runs/sen12ms-maml")
    parser.add_argument("--method", choices=METHODS, help="overrides meta.method")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from last.pt (config defaults to its config.yaml)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides train.device")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from landmeta.meta.trainer import train  # torch and smp load only when training

    config_path = args.config
    if config_path is None:
        if not args.resume:
            raise ConfigError("--config is required (a path or a name in configs/) unless --resume")
        config_path = args.out / "config.yaml"
    overrides = list(args.overrides)
    if args.method:
        overrides.append(f"meta.method={args.method}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    config = load_config(config_path, overrides)
    result = train(config, args.data, args.out, resume=args.resume, progress=not args.no_progress)
    best = "n/a" if result.best_val is None else f"{result.best_val:.4f}"
    print(f"{result.status} at step {result.step}: best validation {best}; run in {result.out}")
    return 130 if result.status == "interrupted" else 0
