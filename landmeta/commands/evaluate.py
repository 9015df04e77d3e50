"""`landmeta evaluate`: score MAML checkpoints and the baselines on the same held-out-region tasks,
or on spatially blocked tasks of a user's own labels over one scene (`--scene --labels`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from landmeta.commands import add_config_args, add_number, check_numbers
from landmeta.config import AT_LEAST_ONE, NON_NEGATIVE, Config, apply_overrides, load_config
from landmeta.errors import ConfigError
from landmeta.evaluation.methods import resolve_checkpoint
from landmeta.evaluation.protocol import evaluate
from landmeta.evaluation.results import open_results
from landmeta.evaluation.user_region import evaluate_region
from landmeta.inference.labels import DEFAULT_CLASS_FIELD, LabelSource
from landmeta.meta.checkpoint import Checkpoint
from landmeta.metrics import metric_names
from landmeta.reporting.report import method_order
from landmeta.reporting.tables import summary_markdown


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `evaluate` sub-command to the parser."""
    parser = sub.add_parser("evaluate", help="compare methods on the saved tasks of held-out regions",
                            description="Score every checkpoint (MAML family adapted with its inner loop, "
                            "pretrain fine-tuned) and the baselines (random init, random forest, and on each "
                            "network's features nearest class mean and random forest with band values) "
                            "on the same saved tasks. Settings come from --config, else from the first run's "
                            "config; --set overrides either. With --scene and --labels instead of --data: "
                            "tasks of your own labels over one scene, support and query in separate spatial "
                            "blocks.")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="chip store folder (from `landmeta preprocess`)")
    data.add_argument("--labels", type=Path,
                      help="vector labels (GeoPackage, Shapefile, GeoJSON, FlatGeobuf) over --scene: polygons or points")
    parser.add_argument("--runs", required=True, nargs="+", help="run folders or checkpoint files")
    parser.add_argument("--split", choices=["test", "val"], help="with --data: regions to evaluate on (default test)")
    parser.add_argument("--scene", type=Path,
                        help="with --labels: the scene they lie on (GeoTIFF or folder of one GeoTIFF per band)")
    parser.add_argument("--layer", help="with --labels: the layer to read (default: the first)")
    parser.add_argument("--class-field", default=DEFAULT_CLASS_FIELD,
                        help=f"with --labels: the field holding class names (default: {DEFAULT_CLASS_FIELD})")
    add_number(parser, "--point-radius", float, NON_NEGATIVE,
               help="with --labels: radius in scene pixels of the disc labelled around each point")
    parser.add_argument("--class-map", type=Path, help="with --labels: CSV of name,id when the field holds ids")
    add_number(parser, "--block", int, AT_LEAST_ONE,
               help="with --labels: side of the spatial blocks in scene pixels (default: 3 windows)")
    parser.add_argument("--tuned", type=Path, help="with --labels: results folder of a held-out evaluation of "
                        "the same checkpoints whose tuned settings to use (default: those of `landmeta adapt`)")
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


LABEL_OPTIONS = ("scene", "layer", "point_radius", "class_map", "block", "tuned")


def run(args: argparse.Namespace) -> int:
    """Run `landmeta evaluate`; returns the exit status."""
    check_numbers(args)
    if args.labels is None:
        given = [name for name in LABEL_OPTIONS if getattr(args, name) is not None]
        if given or args.class_field != DEFAULT_CLASS_FIELD:
            raise ConfigError(f"--{(given or ['class_field'])[0].replace('_', '-')} goes with --labels, not --data")
    elif args.scene is None:
        raise ConfigError("--labels needs --scene (the raster the labels lie on)")
    elif args.split is not None:
        raise ConfigError("--split goes with --data; with --labels the query is held out of your own labels")
    config = evaluation_config(args.runs, args.config, args.overrides)
    shots = parse_shots(args.shots) if args.shots else None
    if args.labels is None:
        out = evaluate(args.data, args.runs, args.out, config, split=args.split or "test", shots=shots,
                       tasks=args.tasks, workers=args.workers, overwrite=args.overwrite, progress=True)
    else:
        source = LabelSource(args.scene, args.labels, args.layer, args.class_field, args.point_radius)
        out = evaluate_region(source, args.runs, args.out, config, shots=shots, tasks=args.tasks,
                              workers=args.workers, block=args.block, tuned_from=args.tuned,
                              class_map=args.class_map, overwrite=args.overwrite, progress=True)
    res = open_results(out)
    headline = metric_names(res.kind)[0]
    region = res.meta.get("user_region")
    where = (f"held-out blocks of {Path(region['labels']).name} ({region['features']} features, "
             f"{region['windows']} windows, {region['blocks']} blocks)" if region else f"{res.meta['split']} regions")
    print(f"{headline} on {where} (mean ± 95% CI):")
    print(summary_markdown(res.summary, headline, method_order(res)))
    print(f"results: {Path(out) / 'results.csv'}, summary: {Path(out) / 'summary.csv'}, tests: {Path(out) / 'tests.csv'}")
    return 0
