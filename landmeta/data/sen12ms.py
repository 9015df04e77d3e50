"""SEN12MS reader: s1/s2/lc triplets paired by season, scene and patch; IGBP -> simplified classes.

Layout: `<root>/ROIs1158_spring/s2_7/ROIs1158_spring_s2_7_p30.tif` (likewise `s1_7`, `lc_7`).
A region is a (season, scene) pair, e.g. `ROIs1158_spring_7`; a tile is a 256² patch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from landmeta.classes import SIMPLIFIED_CLASSES, SIMPLIFIED_COLORS, igbp_lookup
from landmeta.data import Scan, Skips, Tile, TileRef
from landmeta.data.geo import read_header, read_raster
from landmeta.errors import DataError

S1_BANDS = ["VV", "VH"]
S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
ALL_BANDS = S1_BANDS + S2_BANDS
SEASON_DIR = re.compile(r"^ROIs\d+_[a-z]+$")
PATCH_FILE = re.compile(r"^(ROIs\d+_[a-z]+)_(s1|s2|lc)_(\d+)_p(\d+)\.tif$")
EXPECTED_COUNT = {"s1": 2, "s2": 13, "lc": 4}
DEFAULT_CHIP = 128


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
    """Find every patch; check headers (band counts, matching grids, missing files)."""
    bands = parse_bands(options.bands)
    needed = [k for k, names in (("s1", S1_BANDS), ("s2", S2_BANDS)) if set(bands) & set(names)] + ["lc"]
    seasons = sorted(p for p in root.iterdir() if p.is_dir() and SEASON_DIR.match(p.name)) if root.is_dir() else []
    if not seasons:
        raise DataError(f"{root}: no SEN12MS season folders (e.g. ROIs1158_spring/) found")
    found: dict[tuple[str, int, int], dict[str, Path]] = {}
    for season in seasons:
        for path in sorted(season.glob("*_*/*.tif")):
            match = PATCH_FILE.match(path.name)
            if match and match.group(1) == season.name and path.parent.name == f"{match.group(2)}_{match.group(3)}":
                key = (season.name, int(match.group(3)), int(match.group(4)))
                found.setdefault(key, {})[match.group(2)] = path
    tiles = []
    for (season, scene, patch), paths in sorted(found.items()):
        ref = _check_patch(season, scene, patch, paths, needed, skips)
        if ref is not None:
            tiles.append(ref)
    chip = options.chip_size or DEFAULT_CHIP
    return Scan(bands=bands, class_names=list(SIMPLIFIED_CLASSES), class_colors=list(SIMPLIFIED_COLORS),
                kinds=["classification", "segmentation"], tiles=tiles, chip_size=chip,
                load=lambda ref: load(ref, bands))


def _check_patch(season: str, scene: int, patch: int, paths: dict[str, Path], needed: list[str],
                 skips: Skips) -> TileRef | None:
    main = paths.get("s2") or paths.get("s1") or paths["lc"]
    missing = [k for k in needed if k not in paths]
    if missing:
        skips.add(main, f"patch has no {' / '.join(missing)} file")
        return None
    headers = {}
    for kind in needed:
        try:
            headers[kind] = read_header(paths[kind])
        except DataError as exc:
            skips.add_error(paths[kind], exc)
            return None
        if headers[kind]["count"] != EXPECTED_COUNT[kind]:
            skips.add(paths[kind], f"{kind.upper()} file has {headers[kind]['count']} bands, "
                                   f"expected {EXPECTED_COUNT[kind]}")
            return None
    ref = headers["lc"]
    for kind in needed:
        head = headers[kind]
        if (head["height"], head["width"]) != (ref["height"], ref["width"]) or head["crs"] != ref["crs"] \
                or not head["transform"].almost_equals(ref["transform"], precision=1e-3):
            skips.add(paths[kind], f"grid ({head['width']}x{head['height']}, {head['crs']}) disagrees with "
                                   f"{paths['lc'].name} ({ref['width']}x{ref['height']}, {ref['crs']})")
            return None
    region = f"{season}_{scene}"
    return TileRef(tile=f"{region}_p{patch}", region=region, source=str(main), height=ref["height"],
                   width=ref["width"], season=season.split("_", 1)[1], paths={k: paths[k] for k in needed},
                   crs=ref["crs"], transform=ref["transform"])


_IGBP = igbp_lookup()


def load(ref: TileRef, bands: list[str]) -> Tile:
    """Pixels of one patch: S1 in dB, S2 reflectance (DN / 10000), simplified-class mask.

    Nodata: S2 pixels that are zero in every band and S1 pixels that are not finite.
    """
    h, w = ref.height, ref.width
    image = np.empty((len(bands), h, w), dtype=np.float32)
    nodata = np.zeros((h, w), dtype=bool)
    for kind, names in (("s1", S1_BANDS), ("s2", S2_BANDS)):
        chosen = [b for b in bands if b in names]
        if not chosen:
            continue
        raw = read_raster(ref.paths[kind])
        if kind == "s2":
            nodata |= (raw == 0).all(axis=0)
            values = raw.astype(np.float32) / 10000.0
        else:
            values = raw.astype(np.float32)
            nodata |= ~np.isfinite(values).all(axis=0)
        for b in chosen:
            image[bands.index(b)] = values[names.index(b)]
    igbp = read_raster(ref.paths["lc"], [1])[0]
    mask = _IGBP[np.clip(igbp, 0, 255).astype(np.uint8)]
    mask[(igbp < 0) | (igbp > 255)] = 255
    return Tile(image=image, mask=mask, nodata=nodata)
