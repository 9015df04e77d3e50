"""`PreprocessOptions`: the settings of `landmeta preprocess`, as given on the command line and
recorded in the store's manifest (`options`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class PreprocessOptions:
    """Options of `landmeta preprocess`; recorded in the manifest."""

    bands: list[str] | None = None  # band names in channel order; None = all of the source
    chip_size: int | None = None  # None: SEN12MS 128, folder = tile size, DeepGlobe = size // grid
    downsample: int = 1  # integer factor (block mean for images, nearest for masks)
    grid: int = 4  # DeepGlobe: sub-tiles per image side
    split_seed: int = 0
    split_file: Path | None = None  # lines `region,split`
    holdout: Path | None = None  # one test region per line
    split: Literal["random", "clustered"] = "random"  # DeepGlobe: images at random, or whole clusters
    clusters: int = 6  # DeepGlobe: KMeans clusters (pseudo-regions)
    class_map: Path | None = None  # folder: `name,id[,R,G,B]` lines
    parent_pattern: str | None = None  # folder: regex whose first group names a tile's parent patch
    strict: bool = False  # any bad input is fatal
    overwrite: bool = False
