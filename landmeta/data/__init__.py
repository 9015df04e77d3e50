"""Datasets in: readers (sen12ms, deepglobe, folder), geo helpers, splits, the chip store and tasks.

The readers share one small interface, defined here: `scan(root, options, skips) -> Scan` finds
the tiles (headers only, so the store can be sized before any pixel is read) and
`Scan.load(ref) -> Tile` reads one tile's pixels and georeference. `landmeta.data.preprocess` cuts tiles into chips.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from landmeta.errors import DataError


@dataclass
class TileRef:
    """One input tile (a SEN12MS patch, a DeepGlobe image, a file of a folder), before reading.

    `height` and `width` come from the headers (SEN12MS: the most common patch size, checked on load).
    """

    tile: str  # id of the tile; chips cut from it share it as `parent`
    region: str
    source: str  # main input file, named in chips.csv and in messages
    height: int
    width: int
    season: str = ""
    label: int = -1  # tile-level class (folder classification), -1 = from the mask
    paths: dict[str, Path] = field(default_factory=dict)  # reader-specific inputs
    parent: str = ""  # the patch it was cut from when several tiles share one (folder --parent-pattern)


@dataclass
class Tile:
    """A tile's pixels: image (C, H, W) float32 in physical units (NaN allowed), mask (H, W) uint8."""

    image: np.ndarray
    mask: np.ndarray
    nodata: np.ndarray | None = None  # (H, W) bool: pixels without data (besides NaN)
    crs: Any = None  # rasterio CRS of the tile's grid, None without georeference
    transform: Any = None  # affine geotransform of the tile's grid
    band_sources: list[str] | None = None  # per band, the file it was read from (None: the tile's source)
    unknown_labels: dict[int, int] = field(default_factory=dict)  # label values outside the classes -> pixels
    mask_source: str | None = None  # the file the mask was read from (None: the tile's source)


@dataclass
class Scan:
    """What a reader found: band and class names, tiles in a fixed order, and how to load one."""

    bands: list[str]
    class_names: list[str]
    class_colors: list[tuple[int, int, int]]
    kinds: list[str]
    tiles: list[TileRef]
    chip_size: int
    load: Callable[[TileRef], Tile]  # picklable (a module-level function or a partial of one)
    parent_is_chip: bool = False  # DeepGlobe: each sub-tile is its own parent


class Skips:
    """Bad inputs met so far: recorded with the reason, or fatal (DataError) when strict."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: list[dict[str, str]] = []

    def add(self, file: str | Path, reason: str) -> None:
        if self.strict:
            raise DataError(f"{file}: {reason} (--strict)")
        self.items.append({"file": str(file), "reason": reason})

    def add_error(self, file: str | Path, exc: DataError) -> None:
        """Record a DataError against `file` (its message names the file at fault)."""
        self.add(file, str(exc).removeprefix(f"{file}: "))

    def __len__(self) -> int:
        return len(self.items)
