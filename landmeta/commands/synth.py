"""`landmeta synth`: write the embedded synthetic dataset (SEN12MS and DeepGlobe layouts)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from landmeta.commands import add_number, check_numbers
from landmeta.config import SEED
from landmeta.synth import SCALES, generate


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `synth` sub-command to the parser."""
    parser = sub.add_parser("synth", help="generate the synthetic SEN12MS + DeepGlobe dataset")
    parser.add_argument("--out", required=True, type=Path, help="output folder (must be empty or absent)")
    parser.add_argument("--scale", default="default", choices=list(SCALES), help="dataset size (default: default)")
    add_number(parser, "--seed", int, SEED, default=0, help="random seed (same seed, same files)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `landmeta synth`; returns the exit status."""
    check_numbers(args)
    out = generate(args.out, scale=args.scale, seed=args.seed, overwrite=args.overwrite, progress=True)
    counts = json.loads((out / "synth.json").read_text())["counts"]
    print(f"wrote {out}: {counts['sen12ms_regions']} SEN12MS regions, {counts['sen12ms_patches']} patches "
          f"(S1/S2/LC GeoTIFFs); {counts['deepglobe_tiles']} DeepGlobe tiles in {counts['deepglobe_styles']} styles")
    return 0
