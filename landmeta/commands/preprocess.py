"""`landmeta preprocess {sen12ms,deepglobe,folder}`: raw tiles -> chip store (data/NAME)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from landmeta.commands import add_number, check_numbers
from landmeta.config import AT_LEAST_ONE, NON_NEGATIVE, SEED
from landmeta.data.preprocess import SOURCES, PreprocessOptions, preprocess


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `preprocess` sub-command to the parser."""
    parser = sub.add_parser("preprocess", help="turn raw tiles into a chip store of regions",
                            description="Read SEN12MS, DeepGlobe or a folder of your own tiles and write a "
                                        "chip store: memory-mapped chips, regions.gpkg, stats, manifest.")
    parser.add_argument("source", choices=sorted(SOURCES), help="input layout")
    parser.add_argument("--root", required=True, type=Path, help="folder of raw tiles")
    parser.add_argument("--out", required=True, type=Path, help="chip store to write, e.g. data/sen12ms")
    parser.add_argument("--bands", nargs="+", metavar="BAND",
                        help="bands in channel order (SEN12MS: VV VH B01 ... B12 B8A; default all)")
    add_number(parser, "--chip-size", int, AT_LEAST_ONE, help="chip edge in px (SEN12MS 128; folder: tile size)")
    add_number(parser, "--downsample", int, AT_LEAST_ONE, default=1, help="integer downsampling factor (default 1)")
    add_number(parser, "--grid", int, AT_LEAST_ONE, default=4, help="DeepGlobe: sub-tiles per image side (default 4)")
    add_number(parser, "--split-seed", int, SEED, default=0, help="seed of the region split (default 0)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--split-file", type=Path, help="lines 'region,split' (train, val, test)")
    group.add_argument("--holdout", type=Path, help="one test region per line; the rest split 75/25")
    parser.add_argument("--split", choices=["random", "clustered"], default="random",
                        help="DeepGlobe: images at random, or whole clusters per split (default random)")
    add_number(parser, "--clusters", int, AT_LEAST_ONE, default=6, help="DeepGlobe: KMeans clusters (default 6)")
    parser.add_argument("--class-map", type=Path, help="folder: lines 'name,id' or 'name,id,R,G,B'")
    add_number(parser, "--workers", int, NON_NEGATIVE, help="processes reading and cutting tiles (default: one per CPU core; 0: none)")
    parser.add_argument("--parent-pattern", metavar="REGEX",
                        help="folder: tiles whose file names give the same first group are quadrants of one "
                             "patch and stay on one side of every task (SEN12MS quadrants: "
                             "'(p\\d+)(tl|tr|bl|br)')")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad input")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `landmeta preprocess`; returns the exit status."""
    check_numbers(args)
    options = PreprocessOptions(
        bands=args.bands, chip_size=args.chip_size, downsample=args.downsample, grid=args.grid,
        split_seed=args.split_seed, split_file=args.split_file, holdout=args.holdout, split=args.split,
        clusters=args.clusters, class_map=args.class_map, parent_pattern=args.parent_pattern, strict=args.strict,
        overwrite=args.overwrite,
    )
    out = preprocess(args.source, args.root, args.out, options, progress=not args.no_progress, workers=args.workers)
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    print(f"wrote {out}: {counts['chips']} chips of {manifest['chip_size']} px, {len(manifest['bands'])} bands, "
          f"{counts['regions']} regions (train {counts['regions_train']}, val {counts['regions_val']}, "
          f"test {counts['regions_test']})")
    if manifest["skipped"]:
        print(f"skipped {len(manifest['skipped'])} inputs (all listed in {out / 'manifest.json'}):")
        for item in manifest["skipped"][:10]:
            print(f"  {item['file']}: {item['reason']}")
    if counts.get("nodata_pixels"):
        print(f"nodata: {counts['nodata_pixels']} pixels in {counts['nodata_tiles']} tiles set to 0 and ignored")
    for warning in manifest["warnings"][:10]:
        print(f"warning: {warning}")
    return 0
