"""What the store says about its tiles as a whole: per-region totals (`Region`), the values that had
to be changed (`Findings`: floats clipped to float16, unknown label values) with their warnings, the
split of the regions (and DeepGlobe's clusters), regions too small for any task, the normalisation
statistics of the train regions, and the one-line summary of skipped inputs used in errors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from landmeta.data import Skips
from landmeta.data.preprocess.cut import FLOAT16_MAX, Prepared
from landmeta.data.preprocess.options import PreprocessOptions
from landmeta.data.regions import assign_splits, cluster_regions, clustered_split, plot_clusters, random_split
from landmeta.errors import DataError

# The smallest tasks there are: 2-way 1-shot 1-query (2 classes with 2 chips each), or one support
# and one query tile. A region below both is kept but reported.
MIN_CLASS_CHIPS, MIN_CLASSES, MIN_SEG_CHIPS = 2, 2, 2


@dataclass
class Region:
    """One region's totals over its chips, gathered while the tiles are recorded."""

    season: str = ""
    n_chips: int = 0
    labels: Counter = field(default_factory=Counter)
    footprints: list = field(default_factory=list)
    features: np.ndarray | None = None
    sums: np.ndarray | float = 0.0  # per band, over the region's chips (float64)
    squares: np.ndarray | float = 0.0
    pixels: int = 0  # valid (not nodata) pixels in the sums


@dataclass
class Findings:
    """Values the store had to change, over all tiles: floats clipped to float16, unknown label values."""

    clipped: Counter = field(default_factory=Counter)  # file -> values clipped
    clipped_tiles: int = 0
    unknown: Counter = field(default_factory=Counter)  # label value -> pixels
    unknown_files: list[str] = field(default_factory=list)  # mask files holding unknown values

    def add(self, tile: Prepared) -> None:
        """Count one tile's clipped values and unknown label values."""
        if tile.clipped:
            self.clipped.update(tile.clipped)
            self.clipped_tiles += 1
        if tile.unknown_labels:
            self.unknown.update(tile.unknown_labels)
            self.unknown_files.append(tile.mask_source)

    def counts(self) -> dict[str, int]:
        """The manifest's counts of these findings."""
        return {"clipped_values": sum(self.clipped.values()), "clipped_tiles": self.clipped_tiles,
                "unknown_label_pixels": sum(self.unknown.values()), "unknown_label_tiles": len(self.unknown_files)}

    def warnings(self, source: str) -> list[str]:
        """One line per kind of finding, naming the files at fault (the first three)."""
        out = []
        if self.clipped:
            files = ", ".join(f"{f} ({n})" for f, n in list(self.clipped.items())[:3])
            out.append(f"{sum(self.clipped.values())} values beyond ±{FLOAT16_MAX:g} (not nodata) in "
                       f"{_plural(len(self.clipped), 'file')} clipped to fit the store's float16: {files}"
                       f"{' ...' if len(self.clipped) > 3 else ''}")
        if self.unknown:
            what = "IGBP values outside 1..17" if source == "sen12ms" else "mask values outside the classes"
            values = ", ".join(str(v) for v in sorted(self.unknown)[:10])
            out.append(f"{sum(self.unknown.values())} mask pixels in {_plural(len(self.unknown_files), 'file')} hold {what} "
                       f"({values}), ignored (255): {', '.join(self.unknown_files[:3])}"
                       f"{' ...' if len(self.unknown_files) > 3 else ''}")
        return out


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def skip_summary(skips: Skips) -> str:
    """How many inputs were skipped and the first of them, for the errors of a store left empty."""
    if not len(skips):
        return "nothing was skipped"
    first = skips.items[0]
    return f"{len(skips)} inputs skipped, first: {first['file']}: {first['reason']}"


def split_regions(tmp: Path, source: str, names: list[str], regions: dict[str, Region],
                  options: PreprocessOptions) -> tuple[dict[str, str], np.ndarray, list[str]]:
    """Split of each region, DeepGlobe clusters (-1 elsewhere) and warnings; writes clusters.png."""
    warnings: list[str] = []
    if source != "deepglobe":
        split, warnings = assign_splits(names, options.split_seed, options.split_file, options.holdout)
        return split, np.full(len(names), -1), warnings
    features = np.stack([cast(np.ndarray, regions[r].features) for r in names])
    clusters = cluster_regions(features, options.clusters, options.split_seed)
    if options.split_file or options.holdout:
        split, warnings = assign_splits(names, options.split_seed, options.split_file, options.holdout)
    elif options.split == "clustered":
        split = clustered_split(names, clusters, options.split_seed)
    else:
        split = random_split(names, options.split_seed)
    plot_clusters(tmp / "clusters.png", features, clusters, [split[r] for r in names])
    return split, clusters, warnings


def small_regions(names: list[str], regions: dict[str, Region], kinds: list[str]) -> dict[str, str]:
    """Regions that cannot hold the smallest task of any kind the store supports, with why."""
    small = {}
    for r in names:
        info = regions[r]
        eligible = sum(1 for label, k in info.labels.items() if label >= 0 and k >= MIN_CLASS_CHIPS)
        if eligible < MIN_CLASSES and ("segmentation" not in kinds or info.n_chips < MIN_SEG_CHIPS):
            small[r] = f"{info.n_chips} chips, {eligible} classes with {MIN_CLASS_CHIPS}+ chips"
    return small


def band_stats(train: list[Region]) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-band mean and std over the valid pixels of the train regions' chips (from float64 sums),
    and the number of those pixels."""
    count = sum(r.pixels for r in train)
    if count == 0:
        raise DataError("no valid pixels in train regions to compute normalisation statistics from")
    mean = cast(np.ndarray, sum(r.sums for r in train)) / count  # summed in order: the same bits every run
    var = cast(np.ndarray, sum(r.squares for r in train)) / count - mean ** 2
    return mean, np.sqrt(np.maximum(var, 0.0)), count
