"""DeepGlobe Land Cover reader: `<id>_sat.jpg` with `<id>_mask.png`; one image = one region (task).

Each image is cut into a grid of sub-tiles (default 4 x 4 of 612 px for 2448-px images; for other
sizes the sub-tile edge is size // grid), optionally downsampled; every sub-tile is its own parent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from landmeta.classes import DEEPGLOBE_CLASSES, DEEPGLOBE_COLORS, decode_deepglobe_mask
from landmeta.data import Scan, Skips, Tile, TileRef
from landmeta.errors import DataError

BANDS = ["red", "green", "blue"]


def scan(root: Path, options: Any, skips: Skips) -> Scan:
    """Pair images with masks; the first image's size fixes the grid, others must match it."""
    if options.bands and [b.lower() for b in options.bands] != BANDS:
        raise DataError(f"DeepGlobe images have bands {BANDS}; --bands cannot select others")
    if options.chip_size:
        raise DataError("DeepGlobe sub-tiles are set by --grid and --downsample, not --chip-size")
    images = sorted(root.glob("*_sat.jpg")) if root.is_dir() else []
    if not images:
        raise DataError(f"{root}: no DeepGlobe images (<id>_sat.jpg) found")
    tiles: list[TileRef] = []
    size: tuple[int, int] | None = None
    for path in images:
        image_id = path.name.removesuffix("_sat.jpg")
        mask = path.with_name(f"{image_id}_mask.png")
        if not mask.is_file():
            skips.add(path, f"no mask {mask.name} beside the image")
            continue
        try:
            dims = _size(path)
            mask_dims = _size(mask)
        except DataError as exc:
            skips.add_error(path, exc)
            continue
        if dims != mask_dims:
            skips.add(mask, f"mask is {mask_dims[0]}x{mask_dims[1]}, image is {dims[0]}x{dims[1]}")
            continue
        size = size or dims
        if dims != size:
            skips.add(path, f"image is {dims[0]}x{dims[1]}, the first image is {size[0]}x{size[1]}")
            continue
        tiles.append(TileRef(tile=image_id, region=image_id, source=str(path), height=dims[1],
                             width=dims[0], paths={"image": path, "mask": mask}))
    chip = 0 if size is None else min(size) // options.grid // options.downsample
    return Scan(bands=list(BANDS), class_names=list(DEEPGLOBE_CLASSES), class_colors=list(DEEPGLOBE_COLORS),
                kinds=["segmentation"], tiles=tiles, chip_size=chip, load=load, parent_is_chip=True)


def _size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot open as an image ({exc.__class__.__name__})") from exc


def _pixels(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode image ({str(exc) or exc.__class__.__name__})") from exc


def load(ref: TileRef) -> Tile:
    """RGB in 0-1 and the decoded mask; masks with colours outside the seven are bad input."""
    rgb = _pixels(ref.paths["image"])
    ids, unknown = decode_deepglobe_mask(_pixels(ref.paths["mask"]))
    if unknown.any():
        raise DataError(f"{ref.paths['mask']}: {int(unknown.sum())} pixels have colours outside the "
                        f"seven DeepGlobe classes")
    image = np.moveaxis(rgb, -1, 0).astype(np.float32) / 255.0
    return Tile(image=image, mask=ids)
