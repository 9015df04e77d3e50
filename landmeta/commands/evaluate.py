"""`landmeta evaluate`: score MAML checkpoints and the baselines on the same held-out-region tasks."""

from __future__ import annotations

import argparse
from pathlib import Path

from landmeta.commands import add_config_args, add_number, check_numbers
from landmeta.config import AT_LEAST_ONE, Config, apply_overrides, load_config
from landmeta.errors import ConfigError
from landmeta.evaluation.protocol import evaluate, resolve_checkpoint
from landmeta.evaluation.results import open_results
from landmeta.meta.checkpoint import Checkpoint
from landmeta.metrics import metric_names
from landmeta.reporting.report import method_order
from landmeta.reporting.tables import summary_markdown


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `evaluate` sub-command to the parser."""
    parser = sub.add_parser("evaluate", help="compare methods on the saved tasks of held-out regions",
                            description="Score every checkpoint (MAML family adapted with its inner loop, "
                            "pretrain fine-tuned) and the baselines (random init, random forest, prototypes) "
                            "on the same saved tasks. Settings come from --config, else from the first run's "
                            "config; --set overrides either.")
    parser.add_argument("--data", required=True, help="chip store folder (from `landmeta preprocess`)")
    parser.add_argument("--runs", required=True, nargs="+", help="run folders or checkpoint files")
    parser.add_argument("--split", default="test", choices=["test", "val"], help="regions to evaluate on")
    parser.add_argument("--shots", help="comma-separated shot counts, e.g. 0,1,2,5 (default: eval.shots)")
    parser.add_argument("--out", required=True, help="results folder (resumed when interrupted)")
    add_number(parser, "--tasks", int, AT_LEAST_ONE, help="tasks per shot count (default: task.test_tasks)")
    add_number(parser, "--workers", int, AT_LEAST_ONE, help="parallel processes (default: eval.workers)")
    parser.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming --out")
    add_config_args(parser)
    parser.set_defaults(func=run)


def evaluation_config(runs: list[str], config_path: str | None, overrides: list[str]) -> Config:
    """--config if given, else the first run's config; then the --set overrides."""
    if config_path is not None:
        return load_config(config_path, overrides)
    return apply_overrides(Checkpoint.load(resolve_checkpoint(runs[0])).config, overrides)


def parse_shots(text: str) -> list[int]:
    """`--shots 0,1,5` -> [0, 1, 5]; ConfigError for anything else."""
    try:
        shots = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--shots {text}: expected comma-separated integers, e.g. 0,1,2,5") from None
    if not shots or min(shots) < 0:
        raise ConfigError(f"--shots {text}: expected non-negative integers")
    return shots


def run(args: argparse.Namespace) -> int:
    """Run `landmeta evaluate`; returns the exit status."""
    check_numbers(args)
    config = evaluation_config(args.runs, args.config, args.overrides)
    shots = parse_shots(args.shots) if args.shots else None
    out = evaluate(args.data, args.runs, args.out, config, split=args.split, shots=shots, tasks=args.tasks,
                   workers=args.workers, overwrite=args.overwrite, progress=True)
    res = open_results(out)
    headline = metric_names(res.kind)[0]
    print(f"{headline} on {res.meta['split']} regions (mean ± 95% CI):")
    print(summary_markdown(res.summary, headline, method_order(res)))
    print(f"results: {Path(out) / 'results.csv'}, summary: {Path(out) / 'summary.csv'}, tests: {Path(out) / 'tests.csv'}")
    return 0
