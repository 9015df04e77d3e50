"""`landmeta train`: meta-train (or pretrain) a model on a chip store into a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from landmeta.commands import add_config_args, add_number, check_numbers
from landmeta.config import AT_LEAST_ONE, Config, load_config
from landmeta.errors import ConfigError, TrainingError
from landmeta.vocab import TRAIN_METHODS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` sub-command to the parser."""
    parser = sub.add_parser("train", help="meta-train a model on a chip store (or pretrain a baseline)",
                            description="Meta-train a classifier or U-Net over the meta-train regions of "
                                        "a chip store, validating on saved meta-val tasks; writes "
                                        "best.pt, last.pt, metrics.csv and config.yaml into --out.")
    add_config_args(parser)
    parser.add_argument("--data", required=True, type=Path, help="chip store, e.g. data/sen12ms")
    parser.add_argument("--out", required=True, type=Path, help="run folder, e.g. runs/sen12ms-maml")
    parser.add_argument("--method", choices=TRAIN_METHODS, help="overrides meta.method")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from last.pt (config defaults to its config.yaml)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides train.device")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_number(parser, "--nproc", int, AT_LEAST_ONE, default=1,
                        help="processes on this machine (re-runs itself through torch.distributed.run; "
                             "for several nodes use torchrun directly, see docs/distributed.md)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `landmeta train`; returns the exit status."""
    check_numbers(args)
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
    if args.nproc != 1:
        return _launch(args, config, config_path, overrides)
    from landmeta.meta import distributed as dd  # torch and smp load only when training
    from landmeta.meta.trainer import train

    result = train(config, args.data, args.out, resume=args.resume, progress=not args.no_progress)
    if dd.world_from_env().main:
        best = "n/a" if result.best_val is None else f"{result.best_val:.4f}"
        print(f"{result.status} at step {result.step}: best validation {best}; run in {result.out}")
    # Under torchrun an interrupted rank exits normally: the launcher reports the interruption.
    return 130 if result.status == "interrupted" and not dd.world_from_env().active else 0


def _launch(args: argparse.Namespace, config: Config, config_path: Path | str,
            overrides: list[str]) -> int:
    """`--nproc N`: the same command in N processes under torch.distributed.run."""
    from landmeta.meta import distributed as dd

    world = dd.World(0, args.nproc, 0)
    dd.check_split(config.meta.meta_batch, config.train.batch_size, config.meta.method == "pretrain", world)
    argv = ["train", "--config", str(config_path), "--data", str(args.data), "--out", str(args.out)]
    argv += [a for o in overrides for a in ("--set", o)]
    argv += ["--resume"] * args.resume + ["--no-progress"] * args.no_progress
    code, signalled = dd.launch(argv, args.nproc)
    last = args.out / "last.pt"
    kept = f"the last checkpoint {last} is intact" if last.exists() else "no checkpoint was written"
    if signalled:
        print(f"landmeta train: interrupted; {kept}, continue with --resume", file=sys.stderr)
        return 130
    if code != 0:
        raise TrainingError(f"{args.out}: a training process failed (exit status {code}; torchrun stopped the "
                            f"others, see the messages above); {kept}, continue with --resume")
    return 0
