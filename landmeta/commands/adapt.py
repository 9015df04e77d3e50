"""`landmeta adapt`: adapt a checkpoint to a new region's few labelled tiles, or vector labels over a scene."""

from __future__ import annotations

import argparse
from pathlib import Path

from landmeta.commands import add_number, check_numbers
from landmeta.config import NON_NEGATIVE, POSITIVE
from landmeta.errors import ConfigError
from landmeta.inference.adaptation import AdaptOptions, adapt_checkpoint
from landmeta.inference.labels import DEFAULT_CLASS_FIELD, LabelSource


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `adapt` sub-command to the parser."""
    parser = sub.add_parser("adapt", help="adapt a checkpoint to a new region's labelled tiles",
                            description="Support folder: images/<tile> + masks/<tile> (segmentation) or "
                                        "<class name>/<tile> (classification); tiles are GeoTIFF, PNG or JPG. "
                                        "Or --scene with --labels: polygons/points (any CRS) over one scene.")
    parser.add_argument("--checkpoint", required=True, type=Path, help="trained checkpoint (runs/NAME/best.pt)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--support", type=Path, help="folder of the region's labelled tiles")
    source.add_argument("--labels", type=Path,
                        help="vector labels (GeoPackage, Shapefile, GeoJSON, FlatGeobuf): polygons or points")
    parser.add_argument("--scene", type=Path,
                        help="with --labels: the scene they lie on (GeoTIFF, folder of one GeoTIFF per band, "
                             "or Sentinel-2 .SAFE folder)")
    parser.add_argument("--layer", help="with --labels: the layer to read (default: the first)")
    parser.add_argument("--class-field", default=DEFAULT_CLASS_FIELD,
                        help=f"with --labels: the field holding class names (default: {DEFAULT_CLASS_FIELD})")
    add_number(parser, "--point-radius", float, NON_NEGATIVE,
               help="with --labels: radius in scene pixels of the disc labelled around each point "
                    "(default: one pixel at the model's resolution)")
    parser.add_argument("--out", required=True, type=Path, help="adapted checkpoint to write (models/REGION.pt)")
    add_number(parser, "--steps", int, NON_NEGATIVE, help="adaptation steps (default: the method's test-time steps)")
    add_number(parser, "--lr", float, POSITIVE, help="adaptation learning rate (default: the method's own)")
    parser.add_argument("--class-map", type=Path,
                        help="CSV of name,id (or name,id,R,G,B) naming the mask values with checkpoint classes")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `landmeta adapt`; returns the exit status."""
    check_numbers(args)
    if args.labels is None:
        given = [flag for flag, value in (("--scene", args.scene), ("--layer", args.layer),
                                          ("--point-radius", args.point_radius)) if value is not None]
        if given or args.class_field != DEFAULT_CLASS_FIELD:
            raise ConfigError(f"{(given or ['--class-field'])[0]} goes with --labels, not --support")
        support: Path | LabelSource = args.support
    elif args.scene is None:
        raise ConfigError("--labels needs --scene (the raster the labels lie on)")
    else:
        support = LabelSource(args.scene, args.labels, args.layer, args.class_field, args.point_radius)
    options = AdaptOptions(steps=args.steps, lr=args.lr, class_map=args.class_map, overwrite=args.overwrite)
    info = adapt_checkpoint(args.checkpoint, support, args.out, options, progress=True)
    if "labels" in info:
        print(f"adapted on {info['labels']['features']} labelled features ({info['chips']} windows), "
              f"{info['steps']} steps, lr {info['lr']}, in {info['seconds']:.1f} s")
    else:
        print(f"adapted on {len(info['tiles'])} tiles ({info['chips']} chips), {info['steps']} steps, "
              f"lr {info['lr']}, in {info['seconds']:.1f} s")
    print(f"model: {args.out}")
    return 0
