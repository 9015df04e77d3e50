"""`landmeta predict`: map whole scenes with a (adapted) checkpoint by sliding-window inference."""

from __future__ import annotations

import argparse
from pathlib import Path

from landmeta.commands import add_number, check_numbers
from landmeta.config import AT_LEAST_ONE, NON_NEGATIVE
from landmeta.inference.mapping import PredictOptions, predict_maps
from landmeta.meta.checkpoint import Checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `predict` sub-command to the parser."""
    parser = sub.add_parser("predict", help="predict land-cover maps of scenes (GeoTIFF, PNG/JPG, band folders, "
                                             "Sentinel-2 .SAFE)")
    parser.add_argument("--model", required=True, type=Path, help="checkpoint, usually from `landmeta adapt`")
    parser.add_argument("--input", required=True, type=Path,
                        help="a raster, a folder of one GeoTIFF per band, a Sentinel-2 L2A/L1C .SAFE folder, "
                             "or a folder of these")
    parser.add_argument("--out", required=True, type=Path, help="folder for the maps")
    add_number(parser, "--window", int, AT_LEAST_ONE,
               help="window side in input pixels (default 1024; a classifier: its training chip size)")
    add_number(parser, "--overlap", int, NON_NEGATIVE,
               help="pixels shared by neighbouring windows, cross-faded (default 32; a classifier: 0)")
    add_number(parser, "--batch", int, AT_LEAST_ONE, default=1, help="windows per forward pass (default 1)")
    parser.add_argument("--polygons", action="store_true", help="also write class polygons (GeoPackage)")
    parser.add_argument("--html", action="store_true",
                        help="also write NAME_map.html: the map over the input in a browser, offline")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing maps of the same scenes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `landmeta predict`; returns the exit status."""
    check_numbers(args)
    ckpt = Checkpoint.load(args.model)
    options = PredictOptions(window=args.window, overlap=args.overlap, batch=args.batch,
                             polygons=args.polygons, html=args.html, overwrite=args.overwrite, device=args.device)
    for files in predict_maps(ckpt, args.input, args.out, options, progress=True):
        if files.georeferenced:
            print(f"{files.classes}  (class map GeoTIFF; QGIS style {files.style.name})")
            print(f"{files.confidence}  (confidence %)")
        else:
            print(f"{files.classes}  (no georeference in the input: PNG outputs; QGIS style {files.style.name})")
            print(f"{files.confidence}  (confidence %, PNG)")
        print(f"{files.preview}  (quick-look with legend)")
        if files.html:
            print(f"{files.html}  (map viewer: open in a browser, works offline)")
        if files.masked is not None:
            print(f"{files.masked.masked} pixels ({files.masked.percent:.1f} %) masked as no data, cloud, cloud "
                  f"shadow or cirrus by the product's scene classification (SCL)")
        if files.polygons:
            print(f"{files.polygons}  (polygons, layer landcover)")
        elif args.polygons and not files.georeferenced:
            print("no polygons: the input has no georeference")
    return 0
