"""A user's own tiles, one folder per region.

Classification: `<root>/<region>/<class>/<tile>`; segmentation: `<root>/<region>/images/<tile>` with
`<root>/<region>/masks/<tile stem>.{png,tif}`. A tile is a GeoTIFF, PNG or JPEG file, or a folder
of one GeoTIFF per band (`*_B02.tif` ...; Sentinel-2 at 10/20/60 m is stacked onto the finest grid).
GeoTIFFs keep their CRS and give tiles and regions a footprint; PNG/JPEG tiles have none.
Values: uint16 = Sentinel-2 DN (/10000), uint8 = 8-bit (/255), floats kept as they are.
Class-map file (optional): lines `name,id` (mask values are ids) or `name,id,R,G,B` (RGB masks).
"""

from __future__ import annotations

import re
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from landmeta.classes import IGNORE_INDEX
from landmeta.data import Scan, Skips, Tile, TileRef
from landmeta.data.geo import band_files, declared_nodata, read_header, read_raster, stack_bands, to_physical
from landmeta.errors import ConfigError, DataError, LandmetaWarning

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg"}
GEOTIFF = {".tif", ".tiff"}


def read_class_map(path: Path) -> tuple[list[str], dict[tuple[int, int, int], int]]:
    """(class names by id, RGB colour -> id) from a `name,id[,R,G,B]` file."""
    try:
        lines = [(n, l.strip()) for n, l in enumerate(Path(path).read_text().splitlines(), 1)
                 if l.strip() and not l.strip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read class map ({exc.__class__.__name__})") from exc
    names: dict[int, str] = {}
    colours: dict[tuple[int, int, int], int] = {}
    for number, line in lines:
        parts = [p.strip() for p in line.split(",")]
        try:
            cid = int(parts[1])
            rgb: tuple[int, int, int] | tuple[()] = \
                (int(parts[2]), int(parts[3]), int(parts[4])) if len(parts) == 5 else ()
        except (IndexError, ValueError):
            cid, rgb = -1, ()
        if len(parts) not in (2, 5) or not 0 <= cid < IGNORE_INDEX or cid in names:
            raise DataError(f"{path}: line {number}: expected 'name,id' or 'name,id,R,G,B' with a new id "
                            f"in 0..254, got {line!r}")
        if rgb in colours:
            raise DataError(f"{path}: line {number}: colour {rgb} of {parts[0]!r} is already that of "
                            f"{names[colours[rgb]]!r}; give each colour once")
        names[cid] = parts[0]
        if rgb:
            colours[rgb] = cid
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: class ids must be 0..{len(names) - 1} without gaps, got {sorted(names)}")
    return [names[i] for i in range(len(names))], colours


def _check_unique_names(path: Path, names: list[str]) -> None:
    """DataError naming the class map and the first class name given to two ids (a store's classes
    are named once; a support's class map, read by landmeta.inference, may map several ids to one)."""
    seen: dict[str, int] = {}
    for cid, name in enumerate(names):
        if name in seen:
            raise DataError(f"{path}: class name {name!r} is given twice (ids {seen[name]} and {cid}); "
                            f"name each class once")
        seen[name] = cid


def _tile_inputs(folder: Path) -> list[Path]:
    """Image files and per-band tile folders inside `folder`, sorted."""
    return sorted(p for p in folder.iterdir()
                  if (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) or (p.is_dir() and band_files(p)))


def _header(path: Path, skips: Skips) -> dict | None:
    """Size, band names, CRS and transform of a tile input; None (recorded) if unreadable."""
    try:
        if path.is_dir():
            files = band_files(path)
            finest = min(files, key=lambda b: abs(read_header(files[b])["transform"].a))
            head = read_header(files[finest])
            head.update(bands=sorted(files, key=_band_order))
        elif path.suffix.lower() in GEOTIFF:
            head = read_header(path)
            names = [d or f"b{i + 1}" for i, d in enumerate(head["descriptions"])]
            head.update(bands=names)
        else:
            with Image.open(path) as img:
                width, height = img.size
                bands = ["gray"] if img.mode in ("L", "I;16", "I", "F") else ["red", "green", "blue"]
            head = {"height": height, "width": width, "crs": None, "transform": None, "bands": bands, "nodata": None}
    except DataError as exc:
        skips.add_error(path, exc)
        return None
    except (UnidentifiedImageError, OSError) as exc:
        skips.add(path, f"cannot open as an image ({exc.__class__.__name__})")
        return None
    return head


def _band_order(name: str) -> tuple[int, str]:
    digits = name[1:3]
    return (int(digits) if digits.isdigit() else 8, name)  # B8A sorts after B08


def scan(root: Path, options: Any, skips: Skips) -> Scan:
    """Find the tiles of a folder dataset (one folder per region) and their layout."""
    regions = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not regions:
        raise DataError(f"{root}: no region folders found (expected <root>/<region>/...)")
    segmentation = any((r / "images").is_dir() for r in regions)
    names, colours = read_class_map(options.class_map) if options.class_map else ([], {})
    _check_unique_names(options.class_map, names)
    mapped = len(names)  # mask ids must be below this when a class map is given
    candidates: list[tuple[Path, str, int, Path | None]] = []  # (input, region, label, mask)
    if segmentation:
        for region in regions:
            if not (region / "images").is_dir():
                skips.add(region, "segmentation layout, but no images/ folder")
                continue
            for path in _tile_inputs(region / "images"):
                mask = _find_mask(region / "masks", path)
                if mask is None:
                    skips.add(path, f"no mask for this image in {region / 'masks'}")
                    continue
                candidates.append((path, region.name, -1, mask))
    else:
        class_dirs = sorted({c.name for r in regions for c in r.iterdir() if c.is_dir() and _tile_inputs(c)})
        if not names:
            names = class_dirs
        for region in regions:
            for cdir in sorted(c for c in region.iterdir() if c.is_dir()):
                if cdir.name not in names:
                    skips.add(cdir, "class folder not in the class map")
                    continue
                for path in _tile_inputs(cdir):
                    candidates.append((path, region.name, names.index(cdir.name), None))
    if not candidates:
        raise DataError(f"{root}: no image tiles found in its region folders")

    pattern = _parent_regex(options.parent_pattern)
    tiles: list[TileRef] = []
    bands: list[str] | None = None
    wanted: list[str] | None = None
    for path, region_name, label, mask in candidates:
        head = _header(path, skips)
        if head is None:
            continue
        if bands is None:
            bands = head["bands"]
            wanted = _select(bands, options.bands, path)
        elif head["bands"] != bands:
            skips.add(path, f"bands {head['bands']} differ from the first tile's {bands}")
            continue
        rel = path.relative_to(root)
        tiles.append(TileRef(tile="/".join(rel.with_suffix("").parts) if path.is_file() else "/".join(rel.parts),
                             region=region_name, source=str(path), height=head["height"], width=head["width"],
                             label=label, paths={"image": path, **({"mask": mask} if mask else {})},
                             parent=_parent(pattern, region_name, path)))
    if not segmentation:
        _check_single_patch_classes(tiles, skips)
    if not tiles or bands is None or wanted is None:
        raise DataError(f"{root}: no readable tiles (see the skipped inputs)")
    chip = options.chip_size or min(tiles[0].height, tiles[0].width) // options.downsample
    kinds = ["classification", "segmentation"] if segmentation else ["classification"]
    colours_by_id = {cid: rgb for rgb, cid in colours.items()}
    class_colors = [colours_by_id.get(i, _palette(i)) for i in range(len(names))]
    indexes = [bands.index(b) for b in wanted]
    return Scan(bands=wanted, class_names=list(names), class_colors=class_colors, kinds=kinds, tiles=tiles,
                chip_size=chip, load=partial(load, bands=bands, indexes=indexes, mapped=mapped, colours=colours,
                                             segmentation=segmentation))


def _check_single_patch_classes(tiles: list[TileRef], skips: Skips) -> None:
    """Class folders whose tiles all come from one patch (one tile, or quadrants of one parent) can
    never give both a task's support and query, which come from different patches: one
    LandmetaWarning naming them (their chips stay in the store, for pretraining), fatal with --strict."""
    parents: dict[Path, set[str]] = {}
    for t in tiles:
        parents.setdefault(Path(t.source).parent, set()).add(t.parent or t.tile)
    single = [folder for folder, found in parents.items() if len(found) == 1]
    if not single:
        return
    if skips.strict:
        skips.add(single[0], "all its tiles come from one patch, so it can give no task both support and query")
    names = ", ".join(str(f) for f in single[:5]) + (f" and {len(single) - 5} more" if len(single) > 5 else "")
    warnings.warn(f"{len(single)} class folder(s) hold tiles of one patch only and can give no task both support "
                  f"and query (their chips are kept, for pretraining): {names}", LandmetaWarning, stacklevel=2)


def _parent_regex(text: str | None) -> re.Pattern[str] | None:
    """--parent-pattern compiled; ConfigError unless it is a regex with a group."""
    if not text:
        return None
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise ConfigError(f"--parent-pattern '{text}': not a regular expression ({exc})") from None
    if pattern.groups < 1:
        raise ConfigError(f"--parent-pattern '{text}': needs a group naming the parent, e.g. '^(p\\d+)(tl|tr|bl|br)$'")
    return pattern


def _parent(pattern: re.Pattern[str] | None, region: str, path: Path) -> str:
    """`region/<first group>` when the tile's file stem matches `pattern` (quadrants of one patch
    share it, so tasks keep them on one side), else "" (the tile is its own parent)."""
    found = pattern.fullmatch(path.stem) if pattern else None
    return f"{region}/{found.group(1)}" if found else ""


def _select(bands: list[str], asked: list[str] | None, path: Path) -> list[str]:
    if not asked:
        return list(bands)
    missing = [b for b in asked if b not in bands]
    if missing:
        raise DataError(f"{path}: has no bands {missing} (it has {bands})")
    return list(asked)


def _find_mask(folder: Path, image: Path) -> Path | None:
    stem = image.name if image.is_dir() else image.stem
    for suffix in (".png", ".tif", ".tiff"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _palette(i: int) -> tuple[int, int, int]:
    import matplotlib
    r, g, b, _ = matplotlib.colormaps["tab20"](i % 20)
    return int(r * 255), int(g * 255), int(b * 255)


def _read_pixels(path: Path, bands: list[str]) -> tuple[np.ndarray, dict | None]:
    """Raw pixels (C, H, W) of a tile input in its dtype, and its raster header (None for PNG/JPEG)."""
    if path.is_dir():
        return stack_bands(band_files(path), bands)
    if path.suffix.lower() in GEOTIFF:
        return read_raster(path)
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L" if bands == ["gray"] else "RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode image ({str(exc) or exc.__class__.__name__})") from exc
    return (arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)), None


def load(ref: TileRef, bands: list[str], indexes: list[int], mapped: int,
         colours: dict[tuple[int, int, int], int], segmentation: bool) -> Tile:
    """Pixels of one tile in physical units; its mask (all ignore for classification tiles)."""
    raw, head = _read_pixels(ref.paths["image"], bands)
    head = head or {"nodata": None, "crs": None, "transform": None}
    if raw.shape[1:] != (ref.height, ref.width):
        raise DataError(f"{ref.paths['image']}: pixels are {raw.shape[2]}x{raw.shape[1]}, header said "
                        f"{ref.width}x{ref.height}")
    nodata = declared_nodata(raw, head["nodata"])
    image = to_physical(raw[indexes])
    geo = {"crs": head["crs"], "transform": head["transform"], "band_sources": _band_sources(ref, bands, indexes)}
    if not segmentation:
        return Tile(image=image, mask=np.full(image.shape[1:], IGNORE_INDEX, dtype=np.uint8), nodata=nodata, **geo)
    mask = read_mask(ref.paths["mask"], mapped, colours)
    if mask.shape != image.shape[1:]:
        raise DataError(f"{ref.paths['mask']}: mask is {mask.shape[1]}x{mask.shape[0]}, "
                        f"image is {image.shape[2]}x{image.shape[1]}")
    return Tile(image=image, mask=mask, nodata=nodata, **geo)


def _band_sources(ref: TileRef, bands: list[str], indexes: list[int]) -> list[str]:
    """The file each selected band of a tile is read from (one file per band in a band folder)."""
    path = ref.paths["image"]
    files = band_files(path) if path.is_dir() else {}
    return [str(files.get(bands[i], path)) for i in indexes]


def read_mask(path: Path, mapped: int, colours: dict[tuple[int, int, int], int]) -> np.ndarray:
    """Class ids (H, W) uint8 from a mask of ids or (with a coloured class map) of RGB colours."""
    if colours:
        rgb = np.moveaxis(_read_pixels(path, ["red", "green", "blue"])[0], 0, -1)[..., :3].astype(np.int64)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        out = np.full(code.shape, IGNORE_INDEX, dtype=np.uint8)
        known = np.zeros(code.shape, dtype=bool)
        for (r, g, b), cid in colours.items():
            hit = code == ((r << 16) | (g << 8) | b)
            out[hit] = cid
            known |= hit
        if not known.all():
            raise DataError(f"{path}: {int((~known).sum())} pixels have colours not in the class map")
        return out
    ids = _read_ids(path)
    bad = (ids > IGNORE_INDEX) | ((ids >= mapped) & (ids != IGNORE_INDEX)) if mapped else ids > IGNORE_INDEX
    if bad.any():
        raise DataError(f"{path}: {int(bad.sum())} mask values are not class ids "
                        f"(e.g. {int(ids[bad][0])})")
    return ids.astype(np.uint8)


def _read_ids(path: Path) -> np.ndarray:
    """A single-band mask of class ids (GeoTIFF band 1, or a grey/palette PNG) without conversion."""
    if path.suffix.lower() in GEOTIFF:
        return read_raster(path, [1])[0][0]
    try:
        with Image.open(path) as img:
            ids = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode mask ({str(exc) or exc.__class__.__name__})") from exc
    if ids.ndim != 2:
        raise DataError(f"{path}: mask has {ids.shape[2]} channels; give a class map with colours "
                        f"(name,id,R,G,B) for RGB masks")
    return ids
