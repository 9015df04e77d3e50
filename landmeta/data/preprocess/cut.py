"""Per-tile work, run in the worker processes: read one tile, zero its nodata pixels, clip values to
the float16 range, downsample, cut it into chips and write them at the tile's rows of the arrays;
what the store records of the tile (labels, histograms, outlines, band sums) goes back to the main
process as a `Prepared`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import Polygon

from landmeta.classes import IGNORE_INDEX
from landmeta.data import Tile, TileRef
from landmeta.data.chips import grid_chips
from landmeta.data.geo import footprints
from landmeta.data.preprocess.npy import RowWriter
from landmeta.data.regions import image_features
from landmeta.errors import DataError

FLOAT16_MAX = float(np.finfo(np.float16).max)
FLOAT32_LOWEST = float(np.finfo(np.float32).min)  # GDAL's default nodata of float rasters (-3.4e38)


@dataclass(frozen=True)
class TileJob:
    """What preparing a tile needs besides the tile: the same for every tile, sent with each one to
    the worker processes (a few hundred bytes pickled)."""

    load: Callable[[TileRef], Tile]  # picklable, see `Scan.load`
    size: int
    factor: int
    feature_classes: int  # DeepGlobe: classes of the per-image features; 0 = no features
    images: RowWriter
    masks: RowWriter


@dataclass
class Prepared:
    """What the store records of one tile's chips (the chips themselves are already in the arrays)."""

    labels: list[int]
    hists: list[str]  # per chip: JSON {class id: pixels}
    max_id: int  # the largest class id seen, -1 if none
    outline: Polygon | None
    chip_outlines: list[Polygon | None]
    sums: np.ndarray  # per band, float64, over the valid pixels of the chips
    squares: np.ndarray
    pixels: int  # valid pixels in the sums
    nodata_pixels: int
    features: np.ndarray | None = None
    clipped: dict[str, int] = field(default_factory=dict)  # file -> values clipped to the float16 range
    unknown_labels: dict[int, int] = field(default_factory=dict)  # label values outside the classes -> pixels
    mask_source: str = ""  # the file the mask was read from


def prepare_tile(job: TileJob, item: tuple[TileRef, int, int, int]) -> Prepared | DataError:
    """Read one tile, cut it into chips and write them (float16 images, masks) from row `first` of the
    arrays; return their labels, histograms, outlines and band sums, or a DataError for bad input."""
    ref, rows, cols, first = item
    size, factor = job.size, job.factor
    step = size * factor
    windows = [(0, 0, ref.height, ref.width)] + [(i * step, j * step, step, step)
                                                for i in range(rows) for j in range(cols)]
    try:
        tile = job.load(ref)
        outline, *chip_outlines = footprints(tile.crs, tile.transform, windows)
    except DataError as exc:
        return exc
    image, mask = tile.image, tile.mask
    bad = _nodata(image, tile.nodata)  # before any range check: nodata is not out of range
    nodata_pixels = int(np.count_nonzero(bad))
    if nodata_pixels:
        image[:, bad] = 0.0
        mask = mask.copy()
        mask[bad] = IGNORE_INDEX
    clipped = _clip_to_float16(image, tile.band_sources or [ref.source] * len(image))
    if factor > 1:
        image, mask, bad = _downsample(image, mask, bad, factor)
    features = image_features(image, mask, job.feature_classes) if job.feature_classes else None
    covered = np.ascontiguousarray(image[:, :rows * size, :cols * size])
    flat = covered.reshape(len(covered), -1)  # nodata pixels are 0: they add nothing to the sums
    chip_masks = grid_chips(mask[:rows * size, :cols * size], rows, cols, size)
    labels, hists, max_id = [], [], -1
    for chip_mask in chip_masks:
        hist = np.bincount(chip_mask.ravel(), minlength=256)[:IGNORE_INDEX]
        present = np.flatnonzero(hist)
        label = ref.label if ref.label >= 0 else (int(hist.argmax()) if present.size else -1)
        labels.append(label)
        hists.append(json.dumps({int(c): int(hist[c]) for c in present}))
        max_id = max(max_id, label, int(present[-1]) if present.size else -1)
    job.images.write(first, _chips_float16(covered, rows, cols, size))
    job.masks.write(first, chip_masks)
    return Prepared(
        labels=labels, hists=hists,
        max_id=max_id, outline=outline, chip_outlines=chip_outlines,
        sums=flat.sum(axis=1).astype(np.float64),  # per tile: float32 pairwise sums, 3x faster
        squares=np.einsum("ij,ij->i", flat, flat).astype(np.float64),
        pixels=flat.shape[1] - int(np.count_nonzero(bad[:rows * size, :cols * size])),
        nodata_pixels=nodata_pixels, features=features, clipped=clipped, unknown_labels=tile.unknown_labels,
        mask_source=tile.mask_source or ref.source)


def _nodata(image: np.ndarray, declared: np.ndarray | None) -> np.ndarray:
    """(H, W) pixels without data: a non-finite value or GDAL's float nodata in any band, or marked
    nodata by the reader (`declared`)."""
    bad = ~np.isfinite(image).all(axis=0)
    if np.fmin.reduce(image, axis=None) <= FLOAT32_LOWEST:  # fmin skips NaN; -inf may hide the value
        bad |= (image == FLOAT32_LOWEST).any(axis=0)
    if declared is not None:
        bad |= declared
    return bad


def _clip_to_float16(image: np.ndarray, sources: list[str]) -> dict[str, int]:
    """Clip (in place) the values beyond the float16 range of a finite image to its ends; return the
    number clipped per file of `sources` (the file of each band)."""
    if max(np.fmax.reduce(image, axis=None), -np.fmin.reduce(image, axis=None)) <= FLOAT16_MAX:
        return {}
    per_band = np.count_nonzero(np.abs(image) > FLOAT16_MAX, axis=(1, 2))
    np.clip(image, -FLOAT16_MAX, FLOAT16_MAX, out=image)
    clipped: Counter = Counter()
    for source, n in zip(sources, per_band):
        clipped[source] += int(n)
    return {source: n for source, n in clipped.items() if n}


def _chips_float16(image: np.ndarray, rows: int, cols: int, size: int) -> np.ndarray:
    """`grid_chips` of a float32 image, converted to float16 (OpenCV: the same values as numpy's astype,
    rounded to nearest even, in a fifth of the time)."""
    import cv2
    c, h, w = image.shape
    half = cv2.multiply(image.reshape(c, h * w), 1.0, dtype=cv2.CV_16F).reshape(c, h, w)  # type: ignore[call-overload]
    return grid_chips(half, rows, cols, size)


def _downsample(image: np.ndarray, mask: np.ndarray, bad: np.ndarray,
                f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block mean of the image's valid pixels (0 and nodata where a block has none), centre pixel of
    each block for the mask."""
    c, h, w = image.shape
    h2, w2 = h // f, w // f
    sums = image[:, :h2 * f, :w2 * f].reshape(c, h2, f, w2, f).sum(axis=(2, 4))  # nodata pixels are 0
    valid = (~bad[:h2 * f, :w2 * f]).reshape(h2, f, w2, f).sum(axis=(1, 3))
    small = (sums / np.maximum(valid, 1)).astype(np.float32)
    return small, np.ascontiguousarray(mask[f // 2::f, f // 2::f][:h2, :w2]), valid == 0
