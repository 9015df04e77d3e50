"""SEN12MS reader: s1/s2/lc triplets paired by season, scene and patch; IGBP -> simplified classes.

Layout: `<root>/ROIs1158_spring/s2_7/ROIs1158_spring_s2_7_p30.tif` (likewise `s1_7`, `lc_7`).
A region is a (season, scene) pair, e.g. `ROIs1158_spring_7`; a tile is a 256² patch.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from landmeta.classes import SIMPLIFIED_CLASSES, SIMPLIFIED_COLORS, igbp_lookup
from landmeta.data import Scan, Skips, Tile, TileRef
from landmeta.data.geo import declared_nodata, read_header, read_raster
from landmeta.errors import DataError

S1_BANDS = ["VV", "VH"]
S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
ALL_BANDS = S1_BANDS + S2_BANDS
SEASON_DIR = re.compile(r"^ROIs\d+_[a-z]+$")
PATCH_FILE = re.compile(r"^(ROIs\d+_[a-z]+)_(s1|s2|lc)_(\d+)_p(\d+)\.tif$")
EXPECTED_COUNT = {"s1": 2, "s2": 13, "lc": 4}
DEFAULT_CHIP = 128
SIZE_SAMPLE = 64  # lc headers read to find the patch size (the most common one)
IGBP_FIRST, IGBP_LAST = 1, 17  # the IGBP classes of the lc files' first band


def parse_bands(bands: list[str] | None) -> list[str]:
    """Band names in the order asked (default all 15: VV, VH, B01 ... B12)."""
    if not bands:
        return list(ALL_BANDS)
    wanted = [b.strip().upper() for b in bands]
    unknown = [b for b in wanted if b not in ALL_BANDS]
    if unknown:
        raise DataError(f"unknown SEN12MS bands {unknown} (known: {', '.join(ALL_BANDS)})")
    return wanted


def scan(root: Path, options: Any, skips: Skips) -> Scan:
    """Pair s1/s2/lc files by name; the patch size is the most common among a sample of lc headers.

    Band counts, sizes and matching grids are checked as each patch is read (one open per file): a
    patch of another size is skipped and named, it never sets the size of the others.
    """
    bands = parse_bands(options.bands)
    needed = [k for k, names in (("s1", S1_BANDS), ("s2", S2_BANDS)) if set(bands) & set(names)] + ["lc"]
    seasons = sorted(p for p in root.iterdir() if p.is_dir() and SEASON_DIR.match(p.name)) if root.is_dir() else []
    if not seasons:
        raise DataError(f"{root}: no SEN12MS season folders (e.g. ROIs1158_spring/) found")
    found: dict[tuple[str, int, int], dict[str, Path]] = {}
    for folder in seasons:
        for path in sorted(folder.glob("*_*/*.tif")):
            match = PATCH_FILE.match(path.name)
            if match and match.group(1) == folder.name and path.parent.name == f"{match.group(2)}_{match.group(3)}":
                key = (folder.name, int(match.group(3)), int(match.group(4)))
                found.setdefault(key, {})[match.group(2)] = path
    complete = []
    for key, paths in sorted(found.items()):
        missing = [k for k in needed if k not in paths]
        if missing:
            skips.add(paths.get("s2") or paths.get("s1") or paths["lc"], f"patch has no {' / '.join(missing)} file")
            continue
        complete.append((key, paths))
    tiles = []
    size = _patch_size([paths["lc"] for _, paths in complete])
    for (season, scene, patch), paths in complete:
        main = paths.get("s2") or paths.get("s1") or paths["lc"]
        if size is None:  # no sampled lc header could be read: the first readable one
            try:
                head = read_header(paths["lc"])
            except DataError as exc:
                skips.add_error(paths["lc"], exc)
                continue
            size = (head["height"], head["width"])
        region = f"{season}_{scene}"
        tiles.append(TileRef(tile=f"{region}_p{patch}", region=region, source=str(main), height=size[0],
                             width=size[1], season=season.split("_", 1)[1], paths={k: paths[k] for k in needed}))
    chip = options.chip_size or DEFAULT_CHIP
    return Scan(bands=bands, class_names=list(SIMPLIFIED_CLASSES), class_colors=list(SIMPLIFIED_COLORS),
                kinds=["classification", "segmentation"], tiles=tiles, chip_size=chip,
                load=partial(load, bands=bands))


def _patch_size(lcs: list[Path]) -> tuple[int, int] | None:
    """The most common (height, width) among the lc headers of up to SIZE_SAMPLE patches spread evenly
    over the dataset (a tie: the larger); None if none of them can be read."""
    picks = np.unique(np.linspace(0, len(lcs) - 1, min(len(lcs), SIZE_SAMPLE)).round().astype(int))
    sizes: Counter = Counter()
    for i in picks:
        try:
            head = read_header(lcs[i])
        except DataError:  # named when the patch is read
            continue
        sizes[(head["height"], head["width"])] += 1
    return max(sizes, key=lambda hw: (sizes[hw], hw[0] * hw[1])) if sizes else None


_IGBP = igbp_lookup()


def load(ref: TileRef, bands: list[str]) -> Tile:
    """Pixels of one patch: S1 in dB, S2 reflectance (DN / 10000), simplified-class mask.

    Raises DataError for a wrong band count or s1/s2/lc grids that disagree. Nodata: S2 pixels
    that are zero in every band, S1 pixels that are not finite, and a file's declared nodata value
    (non-finite values and GDAL's float nodata in any band are also caught when the tile is cut).
    IGBP values outside 1..17 are ignored in the mask and counted (`Tile.unknown_labels`).
    """
    igbp, lc = read_raster(ref.paths["lc"])
    _check(ref.paths["lc"], "lc", lc, ref, lc)
    image = np.empty((len(bands), ref.height, ref.width), dtype=np.float32)
    nodata = np.zeros((ref.height, ref.width), dtype=bool)
    sources = [str(ref.paths.get("s1" if b in S1_BANDS else "s2", ref.source)) for b in bands]
    for kind, names in (("s1", S1_BANDS), ("s2", S2_BANDS)):
        if kind not in ref.paths:
            continue
        raw, head = read_raster(ref.paths[kind])
        _check(ref.paths[kind], kind, head, ref, lc)
        if kind == "s2":
            nodata |= ~raw.any(axis=0)
        declared = declared_nodata(raw, head["nodata"])
        if declared is not None:
            nodata |= declared
        for i, b in enumerate(bands):
            if b in names:
                np.multiply(raw[names.index(b)], np.float32(1e-4 if kind == "s2" else 1.0), out=image[i])
        if kind == "s1":
            nodata |= ~np.isfinite(raw).all(axis=0)
    return Tile(image=image, mask=_IGBP[np.clip(igbp[0], 0, 255)], nodata=nodata, crs=lc["crs"],
                transform=lc["transform"], band_sources=sources, unknown_labels=_unknown_igbp(igbp[0]),
                mask_source=str(ref.paths["lc"]))


def _unknown_igbp(igbp: np.ndarray) -> dict[int, int]:
    """IGBP values outside 1..17 (which the mask ignores) -> number of pixels holding them."""
    unknown = (igbp < IGBP_FIRST) | (igbp > IGBP_LAST)
    values, pixels = np.unique(igbp[unknown], return_counts=True)
    return {int(v): int(n) for v, n in zip(values, pixels)}


def _check(path: Path, kind: str, head: dict, ref: TileRef, lc: dict) -> None:
    if head["count"] != EXPECTED_COUNT[kind]:
        raise DataError(f"{path}: {kind.upper()} file has {head['count']} bands, expected {EXPECTED_COUNT[kind]}")
    if (head["height"], head["width"]) != (ref.height, ref.width):
        raise DataError(f"{path}: patch is {head['width']}x{head['height']}, the dataset's patches are "
                        f"{ref.width}x{ref.height} (the most common size)")
    if head["crs"] != lc["crs"] or not head["transform"].almost_equals(lc["transform"], precision=1e-3):
        raise DataError(f"{path}: grid ({head['crs']}, origin {head['transform'].c:.1f}, {head['transform'].f:.1f}) "
                        f"disagrees with the lc file's ({lc['crs']}, origin {lc['transform'].c:.1f}, "
                        f"{lc['transform'].f:.1f})")
