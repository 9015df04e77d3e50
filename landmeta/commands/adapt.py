"""`landmeta adapt`: adapt a checkpoint to a new region's few labelled tiles."""

from __future__ import annotations

import argparse
from pathlib import Path

from landmeta.commands import add_number, check_numbers
from landmeta.config import NON_NEGATIVE, POSITIVE
from landmeta.inference.adaptation import adapt_checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("adapt", help="adapt a checkpoint to a new region's labelled tiles",
                            description="Support folder: images/<tile> + masks/<tile> (segmentation) or "
                                        "<class name>/<tile> (classification); tiles are GeoTIFF, PNG or JPG.")
    parser.add_argument("--checkpoint", required=True, type=Path, help="trained checkpoint (runs/NAME/best.pt)")
    parser.add_argument("--support", required=True, type=Path, help="folder of the region's labelled tiles")
    parser.add_argument("--out", required=True, type=Path, help="adapted checkpoint to write (models/REGION.pt)")
    add_number(parser, "--steps", int, NON_NEGATIVE, help="adaptation steps (default: the method's test-time steps)")
    add_number(parser, "--lr", float, POSITIVE, help="adaptation learning rate (default: the method's own)")
    parser.add_argument("--class-map", type=Path,
                        help="CSV of name,id (or name,id,R,G,B) naming the mask values with checkpoint classes")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_numbers(args)
    info = adapt_checkpoint(args.checkpoint, args.support, args.out, args.steps, args.lr, args.class_map,
                            args.overwrite, progress=True)
    print(f"adapted on {len(info['tiles'])} tiles ({info['chips']} chips), {info['steps']} steps, "
          f"lr {info['lr']}, in {info['seconds']:.1f} s")
    print(f"model: {args.out}")
    return 0
